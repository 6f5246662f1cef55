//! Textures, samplers and render state: the values the render slice of the protocol carries,
//! and their encoding.
//!
//! The WebGPU enums travel as a one-byte index into a table of this protocol version; a value
//! outside the table (a compressed or planar texture format, a future wgpu variant) cannot be
//! sent: the guest checks with [`format_supported`] / [`vertex_format_supported`] and reports
//! a WebGPU error instead, and a decoder refuses an index it does not know.

use wgpu_types as wt;

use crate::codec::{Reader, Writer};
use crate::{Id, WireError};

/// Texture formats this protocol version carries: the uncompressed, non-planar WebGPU formats.
pub const TEXTURE_FORMATS: &[wt::TextureFormat] = {
    use wt::TextureFormat::*;
    &[
        R8Unorm,
        R8Snorm,
        R8Uint,
        R8Sint,
        R16Uint,
        R16Sint,
        R16Unorm,
        R16Snorm,
        R16Float,
        Rg8Unorm,
        Rg8Snorm,
        Rg8Uint,
        Rg8Sint,
        R32Uint,
        R32Sint,
        R32Float,
        Rg16Uint,
        Rg16Sint,
        Rg16Unorm,
        Rg16Snorm,
        Rg16Float,
        Rgba8Unorm,
        Rgba8UnormSrgb,
        Rgba8Snorm,
        Rgba8Uint,
        Rgba8Sint,
        Bgra8Unorm,
        Bgra8UnormSrgb,
        Rgb9e5Ufloat,
        Rgb10a2Uint,
        Rgb10a2Unorm,
        Rg11b10Ufloat,
        Rg32Uint,
        Rg32Sint,
        Rg32Float,
        Rgba16Uint,
        Rgba16Sint,
        Rgba16Unorm,
        Rgba16Snorm,
        Rgba16Float,
        Rgba32Uint,
        Rgba32Sint,
        Rgba32Float,
        Stencil8,
        Depth16Unorm,
        Depth24Plus,
        Depth24PlusStencil8,
        Depth32Float,
        Depth32FloatStencil8,
    ]
};

const VERTEX_FORMATS: &[wt::VertexFormat] = {
    use wt::VertexFormat::*;
    &[
        Uint8,
        Uint8x2,
        Uint8x4,
        Sint8,
        Sint8x2,
        Sint8x4,
        Unorm8,
        Unorm8x2,
        Unorm8x4,
        Snorm8,
        Snorm8x2,
        Snorm8x4,
        Uint16,
        Uint16x2,
        Uint16x4,
        Sint16,
        Sint16x2,
        Sint16x4,
        Unorm16,
        Unorm16x2,
        Unorm16x4,
        Snorm16,
        Snorm16x2,
        Snorm16x4,
        Float16,
        Float16x2,
        Float16x4,
        Float32,
        Float32x2,
        Float32x3,
        Float32x4,
        Uint32,
        Uint32x2,
        Uint32x3,
        Uint32x4,
        Sint32,
        Sint32x2,
        Sint32x3,
        Sint32x4,
        Float64,
        Float64x2,
        Float64x3,
        Float64x4,
        Unorm10_10_10_2,
        Unorm8x4Bgra,
    ]
};

const COMPARE: &[wt::CompareFunction] = {
    use wt::CompareFunction::*;
    &[
        Never,
        Less,
        Equal,
        LessEqual,
        Greater,
        NotEqual,
        GreaterEqual,
        Always,
    ]
};

const STENCIL_OPS: &[wt::StencilOperation] = {
    use wt::StencilOperation::*;
    &[
        Keep,
        Zero,
        Replace,
        Invert,
        IncrementClamp,
        DecrementClamp,
        IncrementWrap,
        DecrementWrap,
    ]
};

const BLEND_FACTORS: &[wt::BlendFactor] = {
    use wt::BlendFactor::*;
    &[
        Zero,
        One,
        Src,
        OneMinusSrc,
        SrcAlpha,
        OneMinusSrcAlpha,
        Dst,
        OneMinusDst,
        DstAlpha,
        OneMinusDstAlpha,
        SrcAlphaSaturated,
        Constant,
        OneMinusConstant,
        Src1,
        OneMinusSrc1,
        Src1Alpha,
        OneMinusSrc1Alpha,
    ]
};

const BLEND_OPS: &[wt::BlendOperation] = {
    use wt::BlendOperation::*;
    &[Add, Subtract, ReverseSubtract, Min, Max]
};

const ADDRESS_MODES: &[wt::AddressMode] = {
    use wt::AddressMode::*;
    &[ClampToEdge, Repeat, MirrorRepeat, ClampToBorder]
};

const BORDER_COLORS: &[wt::SamplerBorderColor] = {
    use wt::SamplerBorderColor::*;
    &[TransparentBlack, OpaqueBlack, OpaqueWhite, Zero]
};

const ASPECTS: &[wt::TextureAspect] = {
    use wt::TextureAspect::*;
    &[All, StencilOnly, DepthOnly]
};

const DIMENSIONS: &[wt::TextureDimension] = {
    use wt::TextureDimension::*;
    &[D1, D2, D3]
};

const VIEW_DIMENSIONS: &[wt::TextureViewDimension] = {
    use wt::TextureViewDimension::*;
    &[D1, D2, D2Array, Cube, CubeArray, D3]
};

const TOPOLOGIES: &[wt::PrimitiveTopology] = {
    use wt::PrimitiveTopology::*;
    &[PointList, LineList, LineStrip, TriangleList, TriangleStrip]
};

const INDEX_FORMATS: &[wt::IndexFormat] = &[wt::IndexFormat::Uint16, wt::IndexFormat::Uint32];
const FRONT_FACES: &[wt::FrontFace] = &[wt::FrontFace::Ccw, wt::FrontFace::Cw];
const FACES: &[wt::Face] = &[wt::Face::Front, wt::Face::Back];
const POLYGON_MODES: &[wt::PolygonMode] = &[
    wt::PolygonMode::Fill,
    wt::PolygonMode::Line,
    wt::PolygonMode::Point,
];
const STEP_MODES: &[wt::VertexStepMode] =
    &[wt::VertexStepMode::Vertex, wt::VertexStepMode::Instance];
const FILTERS: &[wt::FilterMode] = &[wt::FilterMode::Nearest, wt::FilterMode::Linear];
const MIP_FILTERS: &[wt::MipmapFilterMode] =
    &[wt::MipmapFilterMode::Nearest, wt::MipmapFilterMode::Linear];
const SAMPLER_BINDINGS: &[wt::SamplerBindingType] = &[
    wt::SamplerBindingType::Filtering,
    wt::SamplerBindingType::NonFiltering,
    wt::SamplerBindingType::Comparison,
];
const SAMPLE_TYPES: &[wt::TextureSampleType] = &[
    wt::TextureSampleType::Float { filterable: true },
    wt::TextureSampleType::Float { filterable: false },
    wt::TextureSampleType::Depth,
    wt::TextureSampleType::Sint,
    wt::TextureSampleType::Uint,
];
const STORAGE_ACCESS: &[wt::StorageTextureAccess] = &[
    wt::StorageTextureAccess::WriteOnly,
    wt::StorageTextureAccess::ReadOnly,
    wt::StorageTextureAccess::ReadWrite,
];

/// Whether this protocol version can carry `f`.
pub fn format_supported(f: wt::TextureFormat) -> bool {
    TEXTURE_FORMATS.contains(&f)
}

/// Whether this protocol version can carry vertex format `f`.
pub fn vertex_format_supported(f: wt::VertexFormat) -> bool {
    VERTEX_FORMATS.contains(&f)
}

/// Writes `v`'s index in `table`; a value outside the table is written as 0xff, which every
/// decoder refuses (the guest checks representability before it sends).
fn put<T: PartialEq>(w: &mut Writer, table: &[T], v: &T) {
    w.u8(table.iter().position(|x| x == v).map_or(0xff, |i| i as u8));
}

fn get<T: Clone>(r: &mut Reader, table: &[T], what: &'static str) -> Result<T, WireError> {
    let i = r.u8()?;
    table.get(i as usize).cloned().ok_or(WireError::BadValue {
        what,
        value: i as u64,
    })
}

/// Encodes a texture format.
pub fn put_format(w: &mut Writer, f: &wt::TextureFormat) {
    put(w, TEXTURE_FORMATS, f)
}

/// Decodes a texture format.
pub fn get_format(r: &mut Reader) -> Result<wt::TextureFormat, WireError> {
    get(r, TEXTURE_FORMATS, "texture format")
}

fn put_extent(w: &mut Writer, e: &wt::Extent3d) {
    w.u32(e.width);
    w.u32(e.height);
    w.u32(e.depth_or_array_layers);
}

fn get_extent(r: &mut Reader) -> Result<wt::Extent3d, WireError> {
    Ok(wt::Extent3d {
        width: r.u32()?,
        height: r.u32()?,
        depth_or_array_layers: r.u32()?,
    })
}

fn put_f32(w: &mut Writer, v: f32) {
    w.u32(v.to_bits());
}

fn get_f32(r: &mut Reader) -> Result<f32, WireError> {
    Ok(f32::from_bits(r.u32()?))
}

/// `create_texture`'s descriptor (the label travels beside it).
#[derive(Debug, Clone, PartialEq)]
pub struct TextureDesc {
    /// Size.
    pub size: wt::Extent3d,
    /// Mip levels.
    pub mip_level_count: u32,
    /// Samples per texel.
    pub sample_count: u32,
    /// 1D, 2D or 3D.
    pub dimension: wt::TextureDimension,
    /// Format.
    pub format: wt::TextureFormat,
    /// `TextureUsages` bits.
    pub usage: u32,
    /// Formats views may take besides `format`.
    pub view_formats: Vec<wt::TextureFormat>,
}

impl TextureDesc {
    pub(crate) fn encode(&self, w: &mut Writer) {
        put_extent(w, &self.size);
        w.u32(self.mip_level_count);
        w.u32(self.sample_count);
        put(w, DIMENSIONS, &self.dimension);
        put_format(w, &self.format);
        w.u32(self.usage);
        w.list(&self.view_formats, put_format);
    }
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(TextureDesc {
            size: get_extent(r)?,
            mip_level_count: r.u32()?,
            sample_count: r.u32()?,
            dimension: get(r, DIMENSIONS, "texture dimension")?,
            format: get_format(r)?,
            usage: r.u32()?,
            view_formats: r.list(1, get_format)?,
        })
    }
}

/// `create_view`'s descriptor (the label travels beside it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TextureViewDesc {
    /// Format; `None` is the texture's.
    pub format: Option<wt::TextureFormat>,
    /// Dimension; `None` follows the texture.
    pub dimension: Option<wt::TextureViewDimension>,
    /// `TextureUsages` bits; `None` is the texture's.
    pub usage: Option<u32>,
    /// Aspect.
    pub aspect: wt::TextureAspect,
    /// First mip level.
    pub base_mip_level: u32,
    /// Mip levels; `None` to the last.
    pub mip_level_count: Option<u32>,
    /// First array layer.
    pub base_array_layer: u32,
    /// Array layers; `None` to the last.
    pub array_layer_count: Option<u32>,
}

impl TextureViewDesc {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.opt(&self.format, put_format);
        w.opt(&self.dimension, |w, d| put(w, VIEW_DIMENSIONS, d));
        w.opt(&self.usage, |w, u| w.u32(*u));
        put(w, ASPECTS, &self.aspect);
        w.u32(self.base_mip_level);
        w.opt(&self.mip_level_count, |w, v| w.u32(*v));
        w.u32(self.base_array_layer);
        w.opt(&self.array_layer_count, |w, v| w.u32(*v));
    }
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(TextureViewDesc {
            format: r.opt(get_format)?,
            dimension: r.opt(|r| get(r, VIEW_DIMENSIONS, "view dimension"))?,
            usage: r.opt(Reader::u32)?,
            aspect: get(r, ASPECTS, "texture aspect")?,
            base_mip_level: r.u32()?,
            mip_level_count: r.opt(Reader::u32)?,
            base_array_layer: r.u32()?,
            array_layer_count: r.opt(Reader::u32)?,
        })
    }
}

/// Encodes a sampler descriptor (its label travels beside it).
pub(crate) fn put_sampler(w: &mut Writer, s: &wt::SamplerDescriptor<()>) {
    put(w, ADDRESS_MODES, &s.address_mode_u);
    put(w, ADDRESS_MODES, &s.address_mode_v);
    put(w, ADDRESS_MODES, &s.address_mode_w);
    put(w, FILTERS, &s.mag_filter);
    put(w, FILTERS, &s.min_filter);
    put(w, MIP_FILTERS, &s.mipmap_filter);
    put_f32(w, s.lod_min_clamp);
    put_f32(w, s.lod_max_clamp);
    w.opt(&s.compare, |w, c| put(w, COMPARE, c));
    w.u16(s.anisotropy_clamp);
    w.opt(&s.border_color, |w, c| put(w, BORDER_COLORS, c));
}

pub(crate) fn get_sampler(r: &mut Reader) -> Result<wt::SamplerDescriptor<()>, WireError> {
    Ok(wt::SamplerDescriptor {
        label: (),
        address_mode_u: get(r, ADDRESS_MODES, "address mode")?,
        address_mode_v: get(r, ADDRESS_MODES, "address mode")?,
        address_mode_w: get(r, ADDRESS_MODES, "address mode")?,
        mag_filter: get(r, FILTERS, "filter mode")?,
        min_filter: get(r, FILTERS, "filter mode")?,
        mipmap_filter: get(r, MIP_FILTERS, "mipmap filter mode")?,
        lod_min_clamp: get_f32(r)?,
        lod_max_clamp: get_f32(r)?,
        compare: r.opt(|r| get(r, COMPARE, "compare function"))?,
        anisotropy_clamp: r.u16()?,
        border_color: r.opt(|r| get(r, BORDER_COLORS, "border color"))?,
    })
}

/// The texture side of a copy (`TexelCopyTextureInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextureCopy {
    /// The texture.
    pub texture: Id,
    /// Mip level.
    pub mip_level: u32,
    /// Origin of the copy.
    pub origin: wt::Origin3d,
    /// Aspect.
    pub aspect: wt::TextureAspect,
}

impl TextureCopy {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.texture);
        w.u32(self.mip_level);
        w.u32(self.origin.x);
        w.u32(self.origin.y);
        w.u32(self.origin.z);
        put(w, ASPECTS, &self.aspect);
    }
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(TextureCopy {
            texture: r.u64()?,
            mip_level: r.u32()?,
            origin: wt::Origin3d {
                x: r.u32()?,
                y: r.u32()?,
                z: r.u32()?,
            },
            aspect: get(r, ASPECTS, "texture aspect")?,
        })
    }
}

/// How texels lie in a buffer or in `write_texture`'s bytes (`TexelCopyBufferLayout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TexelLayout {
    /// Offset of the first texel.
    pub offset: u64,
    /// Bytes from one row of blocks to the next.
    pub bytes_per_row: Option<u32>,
    /// Rows from one image to the next.
    pub rows_per_image: Option<u32>,
}

impl From<wt::TexelCopyBufferLayout> for TexelLayout {
    fn from(l: wt::TexelCopyBufferLayout) -> Self {
        TexelLayout {
            offset: l.offset,
            bytes_per_row: l.bytes_per_row,
            rows_per_image: l.rows_per_image,
        }
    }
}

impl From<TexelLayout> for wt::TexelCopyBufferLayout {
    fn from(l: TexelLayout) -> Self {
        wt::TexelCopyBufferLayout {
            offset: l.offset,
            bytes_per_row: l.bytes_per_row,
            rows_per_image: l.rows_per_image,
        }
    }
}

/// Encodes a buffer's texel layout.
pub(crate) fn put_layout(w: &mut Writer, l: &TexelLayout) {
    w.u64(l.offset);
    w.opt(&l.bytes_per_row, |w, v| w.u32(*v));
    w.opt(&l.rows_per_image, |w, v| w.u32(*v));
}

pub(crate) fn get_layout(r: &mut Reader) -> Result<TexelLayout, WireError> {
    Ok(TexelLayout {
        offset: r.u64()?,
        bytes_per_row: r.opt(Reader::u32)?,
        rows_per_image: r.opt(Reader::u32)?,
    })
}

pub(crate) fn put_copy_extent(w: &mut Writer, e: &wt::Extent3d) {
    put_extent(w, e)
}

pub(crate) fn get_copy_extent(r: &mut Reader) -> Result<wt::Extent3d, WireError> {
    get_extent(r)
}

/// A bind group layout entry's texture, sampler or storage texture type.
pub(crate) fn put_sampler_binding(w: &mut Writer, t: &wt::SamplerBindingType) {
    put(w, SAMPLER_BINDINGS, t)
}

pub(crate) fn get_sampler_binding(r: &mut Reader) -> Result<wt::SamplerBindingType, WireError> {
    get(r, SAMPLER_BINDINGS, "sampler binding type")
}

pub(crate) fn put_texture_binding(
    w: &mut Writer,
    sample_type: &wt::TextureSampleType,
    view_dimension: &wt::TextureViewDimension,
    multisampled: bool,
) {
    put(w, SAMPLE_TYPES, sample_type);
    put(w, VIEW_DIMENSIONS, view_dimension);
    w.bool(multisampled);
}

#[allow(clippy::type_complexity)]
pub(crate) fn get_texture_binding(
    r: &mut Reader,
) -> Result<(wt::TextureSampleType, wt::TextureViewDimension, bool), WireError> {
    Ok((
        get(r, SAMPLE_TYPES, "texture sample type")?,
        get(r, VIEW_DIMENSIONS, "view dimension")?,
        r.bool()?,
    ))
}

pub(crate) fn put_storage_binding(
    w: &mut Writer,
    access: &wt::StorageTextureAccess,
    format: &wt::TextureFormat,
    view_dimension: &wt::TextureViewDimension,
) {
    put(w, STORAGE_ACCESS, access);
    put_format(w, format);
    put(w, VIEW_DIMENSIONS, view_dimension);
}

#[allow(clippy::type_complexity)]
pub(crate) fn get_storage_binding(
    r: &mut Reader,
) -> Result<
    (
        wt::StorageTextureAccess,
        wt::TextureFormat,
        wt::TextureViewDimension,
    ),
    WireError,
> {
    Ok((
        get(r, STORAGE_ACCESS, "storage texture access")?,
        get_format(r)?,
        get(r, VIEW_DIMENSIONS, "view dimension")?,
    ))
}

/// Whether this protocol version can carry storage texture access `a`.
pub fn storage_access_supported(a: wt::StorageTextureAccess) -> bool {
    STORAGE_ACCESS.contains(&a)
}

/// A pipeline stage: module, entry point and override constants.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Shader module.
    pub module: Id,
    /// Entry point; `None` picks the module's only one.
    pub entry_point: Option<String>,
    /// Override constants.
    pub constants: Vec<(String, f64)>,
    /// `zero_initialize_workgroup_memory`.
    pub zero_initialize_workgroup_memory: bool,
}

impl Stage {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.module);
        w.opt(&self.entry_point, |w, v| w.str(v));
        w.list(&self.constants, |w, (k, v)| {
            w.str(k);
            w.f64(*v);
        });
        w.bool(self.zero_initialize_workgroup_memory);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Stage {
            module: r.u64()?,
            entry_point: r.opt(Reader::string)?,
            constants: r.list(12, |r| Ok((r.string()?, r.f64()?)))?,
            zero_initialize_workgroup_memory: r.bool()?,
        })
    }
}

/// One vertex buffer's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct VertexBufferLayout {
    /// Bytes between elements.
    pub array_stride: u64,
    /// Per vertex or per instance.
    pub step_mode: wt::VertexStepMode,
    /// Attributes.
    pub attributes: Vec<wt::VertexAttribute>,
}

/// `create_render_pipeline`'s descriptor (the label travels beside it).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderPipelineDesc {
    /// Layout; `None` derives one from the shaders.
    pub layout: Option<Id>,
    /// Vertex stage.
    pub vertex: Stage,
    /// Vertex buffers (`None`: an unused slot).
    pub buffers: Vec<Option<VertexBufferLayout>>,
    /// Primitive assembly and rasterization.
    pub primitive: wt::PrimitiveState,
    /// Depth and stencil.
    pub depth_stencil: Option<wt::DepthStencilState>,
    /// Multisampling.
    pub multisample: wt::MultisampleState,
    /// Fragment stage and its color targets.
    pub fragment: Option<(Stage, Vec<Option<wt::ColorTargetState>>)>,
}

fn put_stencil_face(w: &mut Writer, s: &wt::StencilFaceState) {
    put(w, COMPARE, &s.compare);
    put(w, STENCIL_OPS, &s.fail_op);
    put(w, STENCIL_OPS, &s.depth_fail_op);
    put(w, STENCIL_OPS, &s.pass_op);
}

fn get_stencil_face(r: &mut Reader) -> Result<wt::StencilFaceState, WireError> {
    Ok(wt::StencilFaceState {
        compare: get(r, COMPARE, "compare function")?,
        fail_op: get(r, STENCIL_OPS, "stencil operation")?,
        depth_fail_op: get(r, STENCIL_OPS, "stencil operation")?,
        pass_op: get(r, STENCIL_OPS, "stencil operation")?,
    })
}

fn put_blend(w: &mut Writer, b: &wt::BlendComponent) {
    put(w, BLEND_FACTORS, &b.src_factor);
    put(w, BLEND_FACTORS, &b.dst_factor);
    put(w, BLEND_OPS, &b.operation);
}

fn get_blend(r: &mut Reader) -> Result<wt::BlendComponent, WireError> {
    Ok(wt::BlendComponent {
        src_factor: get(r, BLEND_FACTORS, "blend factor")?,
        dst_factor: get(r, BLEND_FACTORS, "blend factor")?,
        operation: get(r, BLEND_OPS, "blend operation")?,
    })
}

impl RenderPipelineDesc {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.opt(&self.layout, |w, v| w.u64(*v));
        self.vertex.encode(w);
        w.list(&self.buffers, |w, b| {
            w.opt(b, |w, b| {
                w.u64(b.array_stride);
                put(w, STEP_MODES, &b.step_mode);
                w.list(&b.attributes, |w, a| {
                    put(w, VERTEX_FORMATS, &a.format);
                    w.u64(a.offset);
                    w.u32(a.shader_location);
                });
            })
        });
        let p = &self.primitive;
        put(w, TOPOLOGIES, &p.topology);
        w.opt(&p.strip_index_format, |w, f| put(w, INDEX_FORMATS, f));
        put(w, FRONT_FACES, &p.front_face);
        w.opt(&p.cull_mode, |w, f| put(w, FACES, f));
        w.bool(p.unclipped_depth);
        put(w, POLYGON_MODES, &p.polygon_mode);
        w.bool(p.conservative);
        w.opt(&self.depth_stencil, |w, d| {
            put_format(w, &d.format);
            w.opt(&d.depth_write_enabled, |w, v| w.bool(*v));
            w.opt(&d.depth_compare, |w, c| put(w, COMPARE, c));
            put_stencil_face(w, &d.stencil.front);
            put_stencil_face(w, &d.stencil.back);
            w.u32(d.stencil.read_mask);
            w.u32(d.stencil.write_mask);
            w.u32(d.bias.constant as u32);
            put_f32(w, d.bias.slope_scale);
            put_f32(w, d.bias.clamp);
        });
        w.u32(self.multisample.count);
        w.u64(self.multisample.mask);
        w.bool(self.multisample.alpha_to_coverage_enabled);
        w.opt(&self.fragment, |w, (stage, targets)| {
            stage.encode(w);
            w.list(targets, |w, t| {
                w.opt(t, |w, t| {
                    put_format(w, &t.format);
                    w.opt(&t.blend, |w, b| {
                        put_blend(w, &b.color);
                        put_blend(w, &b.alpha);
                    });
                    w.u32(t.write_mask.bits());
                })
            });
        });
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, WireError> {
        let layout = r.opt(Reader::u64)?;
        let vertex = Stage::decode(r)?;
        let buffers = r.list(1, |r| {
            r.opt(|r| {
                Ok(VertexBufferLayout {
                    array_stride: r.u64()?,
                    step_mode: get(r, STEP_MODES, "vertex step mode")?,
                    attributes: r.list(13, |r| {
                        Ok(wt::VertexAttribute {
                            format: get(r, VERTEX_FORMATS, "vertex format")?,
                            offset: r.u64()?,
                            shader_location: r.u32()?,
                        })
                    })?,
                })
            })
        })?;
        let primitive = wt::PrimitiveState {
            topology: get(r, TOPOLOGIES, "primitive topology")?,
            strip_index_format: r.opt(|r| get(r, INDEX_FORMATS, "index format"))?,
            front_face: get(r, FRONT_FACES, "front face")?,
            cull_mode: r.opt(|r| get(r, FACES, "cull mode"))?,
            unclipped_depth: r.bool()?,
            polygon_mode: get(r, POLYGON_MODES, "polygon mode")?,
            conservative: r.bool()?,
        };
        let depth_stencil = r.opt(|r| {
            Ok(wt::DepthStencilState {
                format: get_format(r)?,
                depth_write_enabled: r.opt(Reader::bool)?,
                depth_compare: r.opt(|r| get(r, COMPARE, "compare function"))?,
                stencil: wt::StencilState {
                    front: get_stencil_face(r)?,
                    back: get_stencil_face(r)?,
                    read_mask: r.u32()?,
                    write_mask: r.u32()?,
                },
                bias: wt::DepthBiasState {
                    constant: r.u32()? as i32,
                    slope_scale: get_f32(r)?,
                    clamp: get_f32(r)?,
                },
            })
        })?;
        let multisample = wt::MultisampleState {
            count: r.u32()?,
            mask: r.u64()?,
            alpha_to_coverage_enabled: r.bool()?,
        };
        let fragment = r.opt(|r| {
            let stage = Stage::decode(r)?;
            let targets = r.list(1, |r| {
                r.opt(|r| {
                    let format = get_format(r)?;
                    let blend = r.opt(|r| {
                        Ok(wt::BlendState {
                            color: get_blend(r)?,
                            alpha: get_blend(r)?,
                        })
                    })?;
                    let bits = r.u32()?;
                    let write_mask =
                        wt::ColorWrites::from_bits(bits).ok_or(WireError::BadValue {
                            what: "color write mask",
                            value: bits as u64,
                        })?;
                    Ok(wt::ColorTargetState {
                        format,
                        blend,
                        write_mask,
                    })
                })
            })?;
            Ok((stage, targets))
        })?;
        Ok(RenderPipelineDesc {
            layout,
            vertex,
            buffers,
            primitive,
            depth_stencil,
            multisample,
            fragment,
        })
    }
}

/// What happens to an attachment at the start of a pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load<V> {
    /// Clear to this value.
    Clear(V),
    /// Keep the contents.
    Load,
}

/// A color attachment of a render pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorAttachment {
    /// The texture view drawn into.
    pub view: Id,
    /// Slice of a 3D view.
    pub depth_slice: Option<u32>,
    /// Multisample resolve target.
    pub resolve_target: Option<Id>,
    /// Load op.
    pub load: Load<wt::Color>,
    /// Store (true) or discard.
    pub store: bool,
}

/// Operations on one aspect of a depth/stencil attachment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ops<V> {
    /// Load op.
    pub load: Load<V>,
    /// Store (true) or discard.
    pub store: bool,
}

/// The depth/stencil attachment of a render pass.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthAttachment {
    /// The view.
    pub view: Id,
    /// Depth operations.
    pub depth_ops: Option<Ops<f32>>,
    /// Stencil operations.
    pub stencil_ops: Option<Ops<u32>>,
}

/// `begin_render_pass`'s descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderPassDesc {
    /// Label.
    pub label: Option<String>,
    /// Color attachments (`None`: an unused slot).
    pub color_attachments: Vec<Option<ColorAttachment>>,
    /// Depth/stencil attachment.
    pub depth_stencil: Option<DepthAttachment>,
}

fn put_load<V>(w: &mut Writer, l: &Load<V>, f: impl FnOnce(&mut Writer, &V)) {
    match l {
        Load::Load => w.u8(0),
        Load::Clear(v) => {
            w.u8(1);
            f(w, v);
        }
    }
}

fn get_load<V>(
    r: &mut Reader,
    f: impl FnOnce(&mut Reader) -> Result<V, WireError>,
) -> Result<Load<V>, WireError> {
    match r.u8()? {
        0 => Ok(Load::Load),
        1 => Ok(Load::Clear(f(r)?)),
        v => Err(WireError::BadValue {
            what: "load op",
            value: v as u64,
        }),
    }
}

impl RenderPassDesc {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.opt(&self.label, |w, v| w.str(v));
        w.list(&self.color_attachments, |w, a| {
            w.opt(a, |w, a| {
                w.u64(a.view);
                w.opt(&a.depth_slice, |w, v| w.u32(*v));
                w.opt(&a.resolve_target, |w, v| w.u64(*v));
                put_load(w, &a.load, |w, c| {
                    w.f64(c.r);
                    w.f64(c.g);
                    w.f64(c.b);
                    w.f64(c.a);
                });
                w.bool(a.store);
            })
        });
        w.opt(&self.depth_stencil, |w, d| {
            w.u64(d.view);
            w.opt(&d.depth_ops, |w, o| {
                put_load(w, &o.load, |w, v| put_f32(w, *v));
                w.bool(o.store);
            });
            w.opt(&d.stencil_ops, |w, o| {
                put_load(w, &o.load, |w, v| w.u32(*v));
                w.bool(o.store);
            });
        });
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(RenderPassDesc {
            label: r.opt(Reader::string)?,
            color_attachments: r.list(1, |r| {
                r.opt(|r| {
                    Ok(ColorAttachment {
                        view: r.u64()?,
                        depth_slice: r.opt(Reader::u32)?,
                        resolve_target: r.opt(Reader::u64)?,
                        load: get_load(r, |r| {
                            Ok(wt::Color {
                                r: r.f64()?,
                                g: r.f64()?,
                                b: r.f64()?,
                                a: r.f64()?,
                            })
                        })?,
                        store: r.bool()?,
                    })
                })
            })?,
            depth_stencil: r.opt(|r| {
                Ok(DepthAttachment {
                    view: r.u64()?,
                    depth_ops: r.opt(|r| {
                        Ok(Ops {
                            load: get_load(r, get_f32)?,
                            store: r.bool()?,
                        })
                    })?,
                    stencil_ops: r.opt(|r| {
                        Ok(Ops {
                            load: get_load(r, |r| r.u32())?,
                            store: r.bool()?,
                        })
                    })?,
                })
            })?,
        })
    }
}

/// Encodes an index format.
pub(crate) fn put_index_format(w: &mut Writer, f: &wt::IndexFormat) {
    put(w, INDEX_FORMATS, f)
}

pub(crate) fn get_index_format(r: &mut Reader) -> Result<wt::IndexFormat, WireError> {
    get(r, INDEX_FORMATS, "index format")
}

pub(crate) fn put_f32s(w: &mut Writer, v: &[f32]) {
    for x in v {
        put_f32(w, *x);
    }
}

pub(crate) fn get_f32s<const N: usize>(r: &mut Reader) -> Result<[f32; N], WireError> {
    let mut out = [0f32; N];
    for x in &mut out {
        *x = get_f32(r)?;
    }
    Ok(out)
}

/// Bytes a texture of `desc` occupies (every mip level, layer and sample at the format's
/// block size), or `None` when the sum does not fit in a u64 or the format has no single
/// block size (a depth/stencil format counts its depth aspect at 4 bytes and stencil at 1).
pub fn texture_bytes(desc: &TextureDesc) -> Option<u64> {
    let f = desc.format;
    let block = match f.block_copy_size(None) {
        Some(b) => b as u64,
        None => {
            let d = f
                .block_copy_size(Some(wt::TextureAspect::DepthOnly))
                .unwrap_or(4) as u64;
            let s = f
                .block_copy_size(Some(wt::TextureAspect::StencilOnly))
                .map_or(0, |v| v as u64);
            d.max(4) + s
        }
    };
    let (bw, bh) = f.block_dimensions();
    let mut total: u64 = 0;
    for level in 0..desc.mip_level_count.min(32) {
        let e = desc.size.mip_level_size(level, desc.dimension);
        let w = e.width.div_ceil(bw) as u64;
        let h = e.height.div_ceil(bh) as u64;
        let bytes = w
            .checked_mul(h)?
            .checked_mul(e.depth_or_array_layers as u64)?
            .checked_mul(block)?
            .checked_mul(desc.sample_count.max(1) as u64)?;
        total = total.checked_add(bytes)?;
    }
    Some(total)
}
