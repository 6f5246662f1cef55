//! The vocabulary: commands (guest → host), encoder commands (recorded by the guest, replayed
//! by the host at `finish`), replies (host → guest) and the values they carry.

use crate::codec::{Reader, Writer};
use crate::gfx::{
    self, RenderPassDesc, RenderPipelineDesc, TextureCopy, TextureDesc, TextureViewDesc,
};
use crate::{Id, WireError};

fn bad(what: &'static str, value: u64) -> WireError {
    WireError::BadValue { what, value }
}

/// The class of a WebGPU error, also used as an error-scope filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `GPUValidationError`.
    Validation = 0,
    /// `GPUOutOfMemoryError` (also a context over its budget).
    OutOfMemory = 1,
    /// `GPUInternalError`.
    Internal = 2,
}

impl ErrorKind {
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        match r.u8()? {
            0 => Ok(ErrorKind::Validation),
            1 => Ok(ErrorKind::OutOfMemory),
            2 => Ok(ErrorKind::Internal),
            v => Err(bad("error kind", v as u64)),
        }
    }
}

/// A WebGPU error as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuError {
    /// Its class.
    pub kind: ErrorKind,
    /// wgpu's (or the executor's) description.
    pub message: String,
}

impl GpuError {
    /// Encodes the error.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.kind as u8);
        w.str(&self.message);
    }
    /// Decodes an error.
    pub fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(GpuError {
            kind: ErrorKind::decode(r)?,
            message: r.string()?,
        })
    }
}

/// Calls every field of `wgpu_types::Limits` that this protocol version carries, in wire
/// order. Adding a field is a protocol change.
macro_rules! limit_fields {
    ($m:ident) => {
        $m!(
            max_texture_dimension_1d: u32,
            max_texture_dimension_2d: u32,
            max_texture_dimension_3d: u32,
            max_texture_array_layers: u32,
            max_bind_groups: u32,
            max_bind_groups_plus_vertex_buffers: u32,
            max_bindings_per_bind_group: u32,
            max_dynamic_uniform_buffers_per_pipeline_layout: u32,
            max_dynamic_storage_buffers_per_pipeline_layout: u32,
            max_sampled_textures_per_shader_stage: u32,
            max_samplers_per_shader_stage: u32,
            max_storage_buffers_per_shader_stage: u32,
            max_storage_textures_per_shader_stage: u32,
            max_uniform_buffers_per_shader_stage: u32,
            max_uniform_buffer_binding_size: u64,
            max_storage_buffer_binding_size: u64,
            max_vertex_buffers: u32,
            max_buffer_size: u64,
            max_vertex_attributes: u32,
            max_vertex_buffer_array_stride: u32,
            max_inter_stage_shader_variables: u32,
            min_uniform_buffer_offset_alignment: u32,
            min_storage_buffer_offset_alignment: u32,
            max_color_attachments: u32,
            max_color_attachment_bytes_per_sample: u32,
            max_compute_workgroup_storage_size: u32,
            max_compute_invocations_per_workgroup: u32,
            max_compute_workgroup_size_x: u32,
            max_compute_workgroup_size_y: u32,
            max_compute_workgroup_size_z: u32,
            max_compute_workgroups_per_dimension: u32,
            max_non_sampler_bindings: u32,
            // Bounds storage buffers per stage in wgpu 30 alongside the limit above.
            max_buffers_and_acceleration_structures_per_shader_stage: u32
        )
    };
}

/// Encodes the limits this protocol carries (the WebGPU core limits).
pub fn encode_limits(w: &mut Writer, l: &wgpu_types::Limits) {
    macro_rules! enc {
        ($($f:ident: $t:ty),*) => { $( w.u64(l.$f as u64); )* };
    }
    limit_fields!(enc);
}

/// Decodes limits; the fields this protocol does not carry keep WebGPU's defaults, which
/// leave every native-only capability (immediates, mesh shaders, ray tracing, binding
/// arrays) at zero.
pub fn decode_limits(r: &mut Reader) -> Result<wgpu_types::Limits, WireError> {
    let mut l = wgpu_types::Limits::default();
    macro_rules! dec {
        ($($f:ident: $t:ty),*) => { $(
            let v = r.u64()?;
            l.$f = <$t>::try_from(v).map_err(|_| bad(stringify!($f), v))?;
        )* };
    }
    limit_fields!(dec);
    Ok(l)
}

/// What the guest learns about the host's adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterDesc {
    /// Adapter name (`AdapterInfo::name`).
    pub name: String,
    /// PCI vendor id.
    pub vendor: u32,
    /// PCI device id.
    pub device: u32,
    /// `DeviceType` as 0 other, 1 integrated, 2 discrete, 3 virtual, 4 cpu.
    pub device_type: u8,
    /// Driver name.
    pub driver: String,
    /// Driver description.
    pub driver_info: String,
    /// The host's limits, capped to what this protocol carries.
    pub limits: wgpu_types::Limits,
}

/// The kind of a buffer binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferBindingKind {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>` (true) or `read_write` (false).
    Storage {
        /// Read-only storage.
        read_only: bool,
    },
}

/// The binding types of a bind group layout entry that this version carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingType {
    /// A buffer binding.
    Buffer {
        /// Uniform or storage.
        kind: BufferBindingKind,
        /// Dynamic offsets.
        has_dynamic_offset: bool,
        /// Minimum binding size.
        min_binding_size: Option<u64>,
    },
    /// A sampler.
    Sampler(wgpu_types::SamplerBindingType),
    /// A sampled texture.
    Texture {
        /// What the shader reads.
        sample_type: wgpu_types::TextureSampleType,
        /// View dimension.
        view_dimension: wgpu_types::TextureViewDimension,
        /// Multisampled.
        multisampled: bool,
    },
    /// A storage texture.
    StorageTexture {
        /// Access.
        access: wgpu_types::StorageTextureAccess,
        /// Format.
        format: wgpu_types::TextureFormat,
        /// View dimension.
        view_dimension: wgpu_types::TextureViewDimension,
    },
}

/// One entry of a bind group layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindGroupLayoutEntry {
    /// Binding number.
    pub binding: u32,
    /// `ShaderStages` bits.
    pub visibility: u32,
    /// What is bound.
    pub ty: BindingType,
    /// Array count (binding arrays).
    pub count: Option<u32>,
}

/// A resource bound in a bind group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingResource {
    /// A range of a buffer.
    Buffer {
        /// The buffer.
        buffer: Id,
        /// Start of the range.
        offset: u64,
        /// Its size; `None` is to the end.
        size: Option<u64>,
    },
    /// A sampler.
    Sampler(Id),
    /// A texture view.
    TextureView(Id),
}

/// One entry of a bind group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindGroupEntry {
    /// Binding number.
    pub binding: u32,
    /// The resource.
    pub resource: BindingResource,
}

/// How a buffer is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapMode {
    /// For reading.
    Read = 0,
    /// For writing.
    Write = 1,
}

/// A command recorded into a command encoder (or one of its passes) by the guest and replayed
/// by the host when the encoder is finished.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderCommand {
    /// `copy_buffer_to_buffer`.
    CopyBufferToBuffer {
        /// Source buffer.
        src: Id,
        /// Source offset.
        src_offset: u64,
        /// Destination buffer.
        dst: Id,
        /// Destination offset.
        dst_offset: u64,
        /// Bytes; `None` copies the rest of the source.
        size: Option<u64>,
    },
    /// `clear_buffer`.
    ClearBuffer {
        /// The buffer.
        buffer: Id,
        /// Start.
        offset: u64,
        /// Bytes; `None` to the end.
        size: Option<u64>,
    },
    /// `begin_compute_pass`; the commands up to `EndComputePass` belong to the pass.
    BeginComputePass {
        /// Label.
        label: Option<String>,
    },
    /// End of the compute pass.
    EndComputePass,
    /// `ComputePass::set_pipeline`.
    SetComputePipeline {
        /// The pipeline.
        pipeline: Id,
    },
    /// `set_bind_group` in a pass.
    SetBindGroup {
        /// Group index.
        index: u32,
        /// The group, or `None` to unset.
        group: Option<Id>,
        /// Dynamic offsets.
        offsets: Vec<u32>,
    },
    /// `dispatch_workgroups`.
    Dispatch {
        /// X count.
        x: u32,
        /// Y count.
        y: u32,
        /// Z count.
        z: u32,
    },
    /// `dispatch_workgroups_indirect`.
    DispatchIndirect {
        /// Buffer with the arguments.
        buffer: Id,
        /// Their offset.
        offset: u64,
    },
    /// `push_debug_group` (encoder or pass).
    PushDebugGroup(String),
    /// `pop_debug_group`.
    PopDebugGroup,
    /// `insert_debug_marker`.
    InsertDebugMarker(String),
    /// `copy_buffer_to_texture`.
    CopyBufferToTexture {
        /// Source buffer.
        src: Id,
        /// Its texel layout.
        layout: gfx::TexelLayout,
        /// Destination.
        dst: TextureCopy,
        /// Extent.
        size: wgpu_types::Extent3d,
    },
    /// `copy_texture_to_buffer`.
    CopyTextureToBuffer {
        /// Source.
        src: TextureCopy,
        /// Destination buffer.
        dst: Id,
        /// Its texel layout.
        layout: gfx::TexelLayout,
        /// Extent.
        size: wgpu_types::Extent3d,
    },
    /// `copy_texture_to_texture`.
    CopyTextureToTexture {
        /// Source.
        src: TextureCopy,
        /// Destination.
        dst: TextureCopy,
        /// Extent.
        size: wgpu_types::Extent3d,
    },
    /// `begin_render_pass`; the commands up to `EndRenderPass` belong to the pass.
    BeginRenderPass(Box<RenderPassDesc>),
    /// End of the render pass.
    EndRenderPass,
    /// `RenderPass::set_pipeline`.
    SetRenderPipeline {
        /// The pipeline.
        pipeline: Id,
    },
    /// `set_vertex_buffer`.
    SetVertexBuffer {
        /// Slot.
        slot: u32,
        /// Buffer; `None` unbinds the slot.
        buffer: Option<Id>,
        /// Offset.
        offset: u64,
        /// Size; `None` to the end.
        size: Option<u64>,
    },
    /// `set_index_buffer`.
    SetIndexBuffer {
        /// Buffer.
        buffer: Id,
        /// Index format.
        format: wgpu_types::IndexFormat,
        /// Offset.
        offset: u64,
        /// Size; `None` to the end.
        size: Option<u64>,
    },
    /// `set_viewport(x, y, w, h, min_depth, max_depth)`.
    SetViewport([f32; 6]),
    /// `set_scissor_rect(x, y, w, h)`.
    SetScissorRect([u32; 4]),
    /// `set_blend_constant`.
    SetBlendConstant([f64; 4]),
    /// `set_stencil_reference`.
    SetStencilReference(u32),
    /// `draw(vertices, instances)`.
    Draw {
        /// Vertex range.
        vertices: (u32, u32),
        /// Instance range.
        instances: (u32, u32),
    },
    /// `draw_indexed(indices, base_vertex, instances)`.
    DrawIndexed {
        /// Index range.
        indices: (u32, u32),
        /// Added to each index.
        base_vertex: i32,
        /// Instance range.
        instances: (u32, u32),
    },
    /// `draw_indirect`.
    DrawIndirect {
        /// Arguments buffer.
        buffer: Id,
        /// Their offset.
        offset: u64,
    },
    /// `draw_indexed_indirect`.
    DrawIndexedIndirect {
        /// Arguments buffer.
        buffer: Id,
        /// Their offset.
        offset: u64,
    },
}

impl EncoderCommand {
    fn encode(&self, w: &mut Writer) {
        match self {
            EncoderCommand::CopyBufferToBuffer {
                src,
                src_offset,
                dst,
                dst_offset,
                size,
            } => {
                w.u16(1);
                w.u64(*src);
                w.u64(*src_offset);
                w.u64(*dst);
                w.u64(*dst_offset);
                w.opt(size, |w, v| w.u64(*v));
            }
            EncoderCommand::ClearBuffer {
                buffer,
                offset,
                size,
            } => {
                w.u16(2);
                w.u64(*buffer);
                w.u64(*offset);
                w.opt(size, |w, v| w.u64(*v));
            }
            EncoderCommand::BeginComputePass { label } => {
                w.u16(3);
                w.opt(label, |w, v| w.str(v));
            }
            EncoderCommand::EndComputePass => w.u16(4),
            EncoderCommand::SetComputePipeline { pipeline } => {
                w.u16(5);
                w.u64(*pipeline);
            }
            EncoderCommand::SetBindGroup {
                index,
                group,
                offsets,
            } => {
                w.u16(6);
                w.u32(*index);
                w.opt(group, |w, v| w.u64(*v));
                w.list(offsets, |w, v| w.u32(*v));
            }
            EncoderCommand::Dispatch { x, y, z } => {
                w.u16(7);
                w.u32(*x);
                w.u32(*y);
                w.u32(*z);
            }
            EncoderCommand::DispatchIndirect { buffer, offset } => {
                w.u16(8);
                w.u64(*buffer);
                w.u64(*offset);
            }
            EncoderCommand::PushDebugGroup(s) => {
                w.u16(9);
                w.str(s);
            }
            EncoderCommand::PopDebugGroup => w.u16(10),
            EncoderCommand::InsertDebugMarker(s) => {
                w.u16(11);
                w.str(s);
            }
            EncoderCommand::CopyBufferToTexture {
                src,
                layout,
                dst,
                size,
            } => {
                w.u16(12);
                w.u64(*src);
                gfx::put_layout(w, layout);
                dst.encode(w);
                gfx::put_copy_extent(w, size);
            }
            EncoderCommand::CopyTextureToBuffer {
                src,
                dst,
                layout,
                size,
            } => {
                w.u16(13);
                src.encode(w);
                w.u64(*dst);
                gfx::put_layout(w, layout);
                gfx::put_copy_extent(w, size);
            }
            EncoderCommand::CopyTextureToTexture { src, dst, size } => {
                w.u16(14);
                src.encode(w);
                dst.encode(w);
                gfx::put_copy_extent(w, size);
            }
            EncoderCommand::BeginRenderPass(d) => {
                w.u16(15);
                d.encode(w);
            }
            EncoderCommand::EndRenderPass => w.u16(16),
            EncoderCommand::SetRenderPipeline { pipeline } => {
                w.u16(17);
                w.u64(*pipeline);
            }
            EncoderCommand::SetVertexBuffer {
                slot,
                buffer,
                offset,
                size,
            } => {
                w.u16(18);
                w.u32(*slot);
                w.opt(buffer, |w, v| w.u64(*v));
                w.u64(*offset);
                w.opt(size, |w, v| w.u64(*v));
            }
            EncoderCommand::SetIndexBuffer {
                buffer,
                format,
                offset,
                size,
            } => {
                w.u16(19);
                w.u64(*buffer);
                gfx::put_index_format(w, format);
                w.u64(*offset);
                w.opt(size, |w, v| w.u64(*v));
            }
            EncoderCommand::SetViewport(v) => {
                w.u16(20);
                gfx::put_f32s(w, v);
            }
            EncoderCommand::SetScissorRect(v) => {
                w.u16(21);
                for x in v {
                    w.u32(*x);
                }
            }
            EncoderCommand::SetBlendConstant(v) => {
                w.u16(22);
                for x in v {
                    w.f64(*x);
                }
            }
            EncoderCommand::SetStencilReference(v) => {
                w.u16(23);
                w.u32(*v);
            }
            EncoderCommand::Draw {
                vertices,
                instances,
            } => {
                w.u16(24);
                w.u32(vertices.0);
                w.u32(vertices.1);
                w.u32(instances.0);
                w.u32(instances.1);
            }
            EncoderCommand::DrawIndexed {
                indices,
                base_vertex,
                instances,
            } => {
                w.u16(25);
                w.u32(indices.0);
                w.u32(indices.1);
                w.u32(*base_vertex as u32);
                w.u32(instances.0);
                w.u32(instances.1);
            }
            EncoderCommand::DrawIndirect { buffer, offset } => {
                w.u16(26);
                w.u64(*buffer);
                w.u64(*offset);
            }
            EncoderCommand::DrawIndexedIndirect { buffer, offset } => {
                w.u16(27);
                w.u64(*buffer);
                w.u64(*offset);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(match r.u16()? {
            1 => EncoderCommand::CopyBufferToBuffer {
                src: r.u64()?,
                src_offset: r.u64()?,
                dst: r.u64()?,
                dst_offset: r.u64()?,
                size: r.opt(Reader::u64)?,
            },
            2 => EncoderCommand::ClearBuffer {
                buffer: r.u64()?,
                offset: r.u64()?,
                size: r.opt(Reader::u64)?,
            },
            3 => EncoderCommand::BeginComputePass {
                label: r.opt(Reader::string)?,
            },
            4 => EncoderCommand::EndComputePass,
            5 => EncoderCommand::SetComputePipeline { pipeline: r.u64()? },
            6 => EncoderCommand::SetBindGroup {
                index: r.u32()?,
                group: r.opt(Reader::u64)?,
                offsets: r.list(4, Reader::u32)?,
            },
            7 => EncoderCommand::Dispatch {
                x: r.u32()?,
                y: r.u32()?,
                z: r.u32()?,
            },
            8 => EncoderCommand::DispatchIndirect {
                buffer: r.u64()?,
                offset: r.u64()?,
            },
            9 => EncoderCommand::PushDebugGroup(r.string()?),
            10 => EncoderCommand::PopDebugGroup,
            11 => EncoderCommand::InsertDebugMarker(r.string()?),
            12 => EncoderCommand::CopyBufferToTexture {
                src: r.u64()?,
                layout: gfx::get_layout(r)?,
                dst: TextureCopy::decode(r)?,
                size: gfx::get_copy_extent(r)?,
            },
            13 => EncoderCommand::CopyTextureToBuffer {
                src: TextureCopy::decode(r)?,
                dst: r.u64()?,
                layout: gfx::get_layout(r)?,
                size: gfx::get_copy_extent(r)?,
            },
            14 => EncoderCommand::CopyTextureToTexture {
                src: TextureCopy::decode(r)?,
                dst: TextureCopy::decode(r)?,
                size: gfx::get_copy_extent(r)?,
            },
            15 => EncoderCommand::BeginRenderPass(Box::new(RenderPassDesc::decode(r)?)),
            16 => EncoderCommand::EndRenderPass,
            17 => EncoderCommand::SetRenderPipeline { pipeline: r.u64()? },
            18 => EncoderCommand::SetVertexBuffer {
                slot: r.u32()?,
                buffer: r.opt(Reader::u64)?,
                offset: r.u64()?,
                size: r.opt(Reader::u64)?,
            },
            19 => EncoderCommand::SetIndexBuffer {
                buffer: r.u64()?,
                format: gfx::get_index_format(r)?,
                offset: r.u64()?,
                size: r.opt(Reader::u64)?,
            },
            20 => EncoderCommand::SetViewport(gfx::get_f32s(r)?),
            21 => EncoderCommand::SetScissorRect([r.u32()?, r.u32()?, r.u32()?, r.u32()?]),
            22 => EncoderCommand::SetBlendConstant([r.f64()?, r.f64()?, r.f64()?, r.f64()?]),
            23 => EncoderCommand::SetStencilReference(r.u32()?),
            24 => EncoderCommand::Draw {
                vertices: (r.u32()?, r.u32()?),
                instances: (r.u32()?, r.u32()?),
            },
            25 => EncoderCommand::DrawIndexed {
                indices: (r.u32()?, r.u32()?),
                base_vertex: r.u32()? as i32,
                instances: (r.u32()?, r.u32()?),
            },
            26 => EncoderCommand::DrawIndirect {
                buffer: r.u64()?,
                offset: r.u64()?,
            },
            27 => EncoderCommand::DrawIndexedIndirect {
                buffer: r.u64()?,
                offset: r.u64()?,
            },
            t => return Err(bad("encoder command", t as u64)),
        })
    }
}

/// A command from the guest.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Asks for the host's adapter; answered by [`Reply::Adapter`] or [`Reply::Failed`].
    RequestAdapter,
    /// Creates a device and its queue; answered by [`Reply::Device`] or [`Reply::Failed`].
    RequestDevice {
        /// Id for the device.
        device: Id,
        /// Id for its queue.
        queue: Id,
        /// Label.
        label: Option<String>,
        /// Required limits (must not exceed the adapter's).
        limits: wgpu_types::Limits,
        /// Required features as `Features::bits()` words; this version offers none.
        features: [u64; 2],
    },
    /// `device.destroy()`.
    DestroyDevice {
        /// The device.
        device: Id,
    },
    /// `push_error_scope`.
    PushErrorScope {
        /// The device.
        device: Id,
        /// Filter.
        filter: ErrorKind,
    },
    /// `pop_error_scope`; answered by [`Reply::Scope`].
    PopErrorScope {
        /// The device.
        device: Id,
    },
    /// `device.poll`; answered by [`Reply::Polled`].
    Poll {
        /// The device.
        device: Id,
        /// Wait for the work submitted so far.
        wait: bool,
    },
    /// `create_buffer`.
    CreateBuffer {
        /// The device.
        device: Id,
        /// Id for the buffer.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Size in bytes.
        size: u64,
        /// `BufferUsages` bits.
        usage: u32,
        /// `mapped_at_creation`.
        mapped_at_creation: bool,
    },
    /// `buffer.destroy()`.
    DestroyBuffer {
        /// The buffer.
        buffer: Id,
    },
    /// `queue.write_buffer`.
    WriteBuffer {
        /// The queue.
        queue: Id,
        /// The buffer.
        buffer: Id,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `map_async` (the host waits for the mapping); answered by [`Reply::Mapped`] with the
    /// range's current contents, or [`Reply::Failed`].
    MapBuffer {
        /// The buffer.
        buffer: Id,
        /// Mode.
        mode: MapMode,
        /// Start of the range.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// `unmap`, with what the guest wrote into its mapped ranges.
    UnmapBuffer {
        /// The buffer.
        buffer: Id,
        /// (offset in the buffer, bytes) per written range.
        writes: Vec<(u64, Vec<u8>)>,
    },
    /// `create_shader_module` from WGSL.
    CreateShaderModule {
        /// The device.
        device: Id,
        /// Id for the module.
        id: Id,
        /// Label.
        label: Option<String>,
        /// WGSL source.
        wgsl: String,
    },
    /// `get_compilation_info`; answered by [`Reply::CompilationInfo`].
    GetCompilationInfo {
        /// The module.
        module: Id,
    },
    /// `create_bind_group_layout`.
    CreateBindGroupLayout {
        /// The device.
        device: Id,
        /// Id for the layout.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Entries.
        entries: Vec<BindGroupLayoutEntry>,
    },
    /// `create_bind_group`.
    CreateBindGroup {
        /// The device.
        device: Id,
        /// Id for the group.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Its layout.
        layout: Id,
        /// Entries.
        entries: Vec<BindGroupEntry>,
    },
    /// `create_pipeline_layout`.
    CreatePipelineLayout {
        /// The device.
        device: Id,
        /// Id for the layout.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Bind group layouts (`None`: an empty slot).
        bind_group_layouts: Vec<Option<Id>>,
        /// Immediate data size.
        immediate_size: u32,
    },
    /// `create_compute_pipeline`.
    CreateComputePipeline {
        /// The device.
        device: Id,
        /// Id for the pipeline.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Layout; `None` derives one from the shader.
        layout: Option<Id>,
        /// Shader module.
        module: Id,
        /// Entry point.
        entry_point: Option<String>,
        /// Override constants.
        constants: Vec<(String, f64)>,
        /// `zero_initialize_workgroup_memory`.
        zero_initialize_workgroup_memory: bool,
    },
    /// `pipeline.get_bind_group_layout(index)`, named `id`.
    GetBindGroupLayout {
        /// The compute pipeline.
        pipeline: Id,
        /// Group index.
        index: u32,
        /// Id for the layout.
        id: Id,
    },
    /// A finished command encoder: the host records `commands` into a command buffer `id`.
    FinishEncoder {
        /// The device.
        device: Id,
        /// Id for the command buffer.
        id: Id,
        /// Label.
        label: Option<String>,
        /// What was recorded.
        commands: Vec<EncoderCommand>,
    },
    /// `queue.submit`.
    Submit {
        /// The queue.
        queue: Id,
        /// Command buffers, consumed.
        command_buffers: Vec<Id>,
    },
    /// The guest dropped its handle to `id` (any kind of object).
    Release {
        /// The object.
        id: Id,
    },
    /// `create_texture`.
    CreateTexture {
        /// The device.
        device: Id,
        /// Id for the texture.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Descriptor.
        desc: TextureDesc,
    },
    /// `texture.destroy()`.
    DestroyTexture {
        /// The texture.
        texture: Id,
    },
    /// `texture.create_view`.
    CreateTextureView {
        /// The texture.
        texture: Id,
        /// Id for the view.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Descriptor.
        desc: TextureViewDesc,
    },
    /// `create_sampler`.
    CreateSampler {
        /// The device.
        device: Id,
        /// Id for the sampler.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Descriptor (its label is unused).
        desc: wgpu_types::SamplerDescriptor<()>,
    },
    /// `queue.write_texture`.
    WriteTexture {
        /// The queue.
        queue: Id,
        /// Destination.
        dst: TextureCopy,
        /// The bytes.
        data: Vec<u8>,
        /// Their layout.
        layout: gfx::TexelLayout,
        /// Extent.
        size: wgpu_types::Extent3d,
    },
    /// `create_render_pipeline`.
    CreateRenderPipeline {
        /// The device.
        device: Id,
        /// Id for the pipeline.
        id: Id,
        /// Label.
        label: Option<String>,
        /// Descriptor.
        desc: Box<RenderPipelineDesc>,
    },
}

fn label(w: &mut Writer, l: &Option<String>) {
    w.opt(l, |w, v| w.str(v));
}

impl Command {
    /// Encodes the command.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Command::RequestAdapter => w.u16(1),
            Command::RequestDevice {
                device,
                queue,
                label: l,
                limits,
                features,
            } => {
                w.u16(2);
                w.u64(*device);
                w.u64(*queue);
                label(w, l);
                encode_limits(w, limits);
                w.u64(features[0]);
                w.u64(features[1]);
            }
            Command::DestroyDevice { device } => {
                w.u16(3);
                w.u64(*device);
            }
            Command::PushErrorScope { device, filter } => {
                w.u16(4);
                w.u64(*device);
                w.u8(*filter as u8);
            }
            Command::PopErrorScope { device } => {
                w.u16(5);
                w.u64(*device);
            }
            Command::Poll { device, wait } => {
                w.u16(6);
                w.u64(*device);
                w.bool(*wait);
            }
            Command::CreateBuffer {
                device,
                id,
                label: l,
                size,
                usage,
                mapped_at_creation,
            } => {
                w.u16(7);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                w.u64(*size);
                w.u32(*usage);
                w.bool(*mapped_at_creation);
            }
            Command::DestroyBuffer { buffer } => {
                w.u16(8);
                w.u64(*buffer);
            }
            Command::WriteBuffer {
                queue,
                buffer,
                offset,
                data,
            } => {
                w.u16(9);
                w.u64(*queue);
                w.u64(*buffer);
                w.u64(*offset);
                w.bytes(data);
            }
            Command::MapBuffer {
                buffer,
                mode,
                offset,
                size,
            } => {
                w.u16(10);
                w.u64(*buffer);
                w.u8(*mode as u8);
                w.u64(*offset);
                w.u64(*size);
            }
            Command::UnmapBuffer { buffer, writes } => {
                w.u16(11);
                w.u64(*buffer);
                w.list(writes, |w, (o, d)| {
                    w.u64(*o);
                    w.bytes(d);
                });
            }
            Command::CreateShaderModule {
                device,
                id,
                label: l,
                wgsl,
            } => {
                w.u16(12);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                w.str(wgsl);
            }
            Command::GetCompilationInfo { module } => {
                w.u16(13);
                w.u64(*module);
            }
            Command::CreateBindGroupLayout {
                device,
                id,
                label: l,
                entries,
            } => {
                w.u16(14);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                w.list(entries, |w, e| {
                    w.u32(e.binding);
                    w.u32(e.visibility);
                    match &e.ty {
                        BindingType::Buffer {
                            kind,
                            has_dynamic_offset,
                            min_binding_size,
                        } => {
                            w.u8(1);
                            w.u8(match kind {
                                BufferBindingKind::Uniform => 0,
                                BufferBindingKind::Storage { read_only: true } => 1,
                                BufferBindingKind::Storage { read_only: false } => 2,
                            });
                            w.bool(*has_dynamic_offset);
                            w.opt(min_binding_size, |w, v| w.u64(*v));
                        }
                        BindingType::Sampler(t) => {
                            w.u8(2);
                            gfx::put_sampler_binding(w, t);
                        }
                        BindingType::Texture {
                            sample_type,
                            view_dimension,
                            multisampled,
                        } => {
                            w.u8(3);
                            gfx::put_texture_binding(w, sample_type, view_dimension, *multisampled);
                        }
                        BindingType::StorageTexture {
                            access,
                            format,
                            view_dimension,
                        } => {
                            w.u8(4);
                            gfx::put_storage_binding(w, access, format, view_dimension);
                        }
                    }
                    w.opt(&e.count, |w, v| w.u32(*v));
                });
            }
            Command::CreateBindGroup {
                device,
                id,
                label: l,
                layout,
                entries,
            } => {
                w.u16(15);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                w.u64(*layout);
                w.list(entries, |w, e| {
                    w.u32(e.binding);
                    match &e.resource {
                        BindingResource::Buffer {
                            buffer,
                            offset,
                            size,
                        } => {
                            w.u8(1);
                            w.u64(*buffer);
                            w.u64(*offset);
                            w.opt(size, |w, v| w.u64(*v));
                        }
                        BindingResource::Sampler(id) => {
                            w.u8(2);
                            w.u64(*id);
                        }
                        BindingResource::TextureView(id) => {
                            w.u8(3);
                            w.u64(*id);
                        }
                    }
                });
            }
            Command::CreatePipelineLayout {
                device,
                id,
                label: l,
                bind_group_layouts,
                immediate_size,
            } => {
                w.u16(16);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                w.list(bind_group_layouts, |w, b| w.opt(b, |w, v| w.u64(*v)));
                w.u32(*immediate_size);
            }
            Command::CreateComputePipeline {
                device,
                id,
                label: l,
                layout,
                module,
                entry_point,
                constants,
                zero_initialize_workgroup_memory,
            } => {
                w.u16(17);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                w.opt(layout, |w, v| w.u64(*v));
                w.u64(*module);
                w.opt(entry_point, |w, v| w.str(v));
                w.list(constants, |w, (k, v)| {
                    w.str(k);
                    w.f64(*v);
                });
                w.bool(*zero_initialize_workgroup_memory);
            }
            Command::GetBindGroupLayout {
                pipeline,
                index,
                id,
            } => {
                w.u16(18);
                w.u64(*pipeline);
                w.u32(*index);
                w.u64(*id);
            }
            Command::FinishEncoder {
                device,
                id,
                label: l,
                commands,
            } => {
                w.u16(19);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                w.list(commands, |w, c| c.encode(w));
            }
            Command::Submit {
                queue,
                command_buffers,
            } => {
                w.u16(20);
                w.u64(*queue);
                w.list(command_buffers, |w, v| w.u64(*v));
            }
            Command::Release { id } => {
                w.u16(21);
                w.u64(*id);
            }
            Command::CreateTexture {
                device,
                id,
                label: l,
                desc,
            } => {
                w.u16(22);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                desc.encode(w);
            }
            Command::DestroyTexture { texture } => {
                w.u16(23);
                w.u64(*texture);
            }
            Command::CreateTextureView {
                texture,
                id,
                label: l,
                desc,
            } => {
                w.u16(24);
                w.u64(*texture);
                w.u64(*id);
                label(w, l);
                desc.encode(w);
            }
            Command::CreateSampler {
                device,
                id,
                label: l,
                desc,
            } => {
                w.u16(25);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                gfx::put_sampler(w, desc);
            }
            Command::WriteTexture {
                queue,
                dst,
                data,
                layout,
                size,
            } => {
                w.u16(26);
                w.u64(*queue);
                dst.encode(w);
                w.bytes(data);
                gfx::put_layout(w, layout);
                gfx::put_copy_extent(w, size);
            }
            Command::CreateRenderPipeline {
                device,
                id,
                label: l,
                desc,
            } => {
                w.u16(27);
                w.u64(*device);
                w.u64(*id);
                label(w, l);
                desc.encode(w);
            }
        }
    }

    /// Decodes one command without trusting the bytes.
    pub fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(match r.u16()? {
            1 => Command::RequestAdapter,
            2 => Command::RequestDevice {
                device: r.u64()?,
                queue: r.u64()?,
                label: r.opt(Reader::string)?,
                limits: decode_limits(r)?,
                features: [r.u64()?, r.u64()?],
            },
            3 => Command::DestroyDevice { device: r.u64()? },
            4 => Command::PushErrorScope {
                device: r.u64()?,
                filter: ErrorKind::decode(r)?,
            },
            5 => Command::PopErrorScope { device: r.u64()? },
            6 => Command::Poll {
                device: r.u64()?,
                wait: r.bool()?,
            },
            7 => Command::CreateBuffer {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                size: r.u64()?,
                usage: r.u32()?,
                mapped_at_creation: r.bool()?,
            },
            8 => Command::DestroyBuffer { buffer: r.u64()? },
            9 => Command::WriteBuffer {
                queue: r.u64()?,
                buffer: r.u64()?,
                offset: r.u64()?,
                data: r.bytes()?.to_vec(),
            },
            10 => Command::MapBuffer {
                buffer: r.u64()?,
                mode: match r.u8()? {
                    0 => MapMode::Read,
                    1 => MapMode::Write,
                    v => return Err(bad("map mode", v as u64)),
                },
                offset: r.u64()?,
                size: r.u64()?,
            },
            11 => Command::UnmapBuffer {
                buffer: r.u64()?,
                writes: r.list(12, |r| Ok((r.u64()?, r.bytes()?.to_vec())))?,
            },
            12 => Command::CreateShaderModule {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                wgsl: r.string()?,
            },
            13 => Command::GetCompilationInfo { module: r.u64()? },
            14 => Command::CreateBindGroupLayout {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                entries: r.list(11, |r| {
                    let binding = r.u32()?;
                    let visibility = r.u32()?;
                    let ty = match r.u8()? {
                        1 => BindingType::Buffer {
                            kind: match r.u8()? {
                                0 => BufferBindingKind::Uniform,
                                1 => BufferBindingKind::Storage { read_only: true },
                                2 => BufferBindingKind::Storage { read_only: false },
                                v => return Err(bad("buffer binding kind", v as u64)),
                            },
                            has_dynamic_offset: r.bool()?,
                            min_binding_size: r.opt(Reader::u64)?,
                        },
                        2 => BindingType::Sampler(gfx::get_sampler_binding(r)?),
                        3 => {
                            let (sample_type, view_dimension, multisampled) =
                                gfx::get_texture_binding(r)?;
                            BindingType::Texture {
                                sample_type,
                                view_dimension,
                                multisampled,
                            }
                        }
                        4 => {
                            let (access, format, view_dimension) = gfx::get_storage_binding(r)?;
                            BindingType::StorageTexture {
                                access,
                                format,
                                view_dimension,
                            }
                        }
                        v => return Err(bad("binding type", v as u64)),
                    };
                    Ok(BindGroupLayoutEntry {
                        binding,
                        visibility,
                        ty,
                        count: r.opt(Reader::u32)?,
                    })
                })?,
            },
            15 => Command::CreateBindGroup {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                layout: r.u64()?,
                entries: r.list(5, |r| {
                    let binding = r.u32()?;
                    let resource = match r.u8()? {
                        1 => BindingResource::Buffer {
                            buffer: r.u64()?,
                            offset: r.u64()?,
                            size: r.opt(Reader::u64)?,
                        },
                        2 => BindingResource::Sampler(r.u64()?),
                        3 => BindingResource::TextureView(r.u64()?),
                        v => return Err(bad("binding resource", v as u64)),
                    };
                    Ok(BindGroupEntry { binding, resource })
                })?,
            },
            16 => Command::CreatePipelineLayout {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                bind_group_layouts: r.list(1, |r| r.opt(Reader::u64))?,
                immediate_size: r.u32()?,
            },
            17 => Command::CreateComputePipeline {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                layout: r.opt(Reader::u64)?,
                module: r.u64()?,
                entry_point: r.opt(Reader::string)?,
                constants: r.list(12, |r| Ok((r.string()?, r.f64()?)))?,
                zero_initialize_workgroup_memory: r.bool()?,
            },
            18 => Command::GetBindGroupLayout {
                pipeline: r.u64()?,
                index: r.u32()?,
                id: r.u64()?,
            },
            19 => Command::FinishEncoder {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                commands: r.list(2, EncoderCommand::decode)?,
            },
            20 => Command::Submit {
                queue: r.u64()?,
                command_buffers: r.list(8, Reader::u64)?,
            },
            21 => Command::Release { id: r.u64()? },
            22 => Command::CreateTexture {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                desc: TextureDesc::decode(r)?,
            },
            23 => Command::DestroyTexture { texture: r.u64()? },
            24 => Command::CreateTextureView {
                texture: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                desc: TextureViewDesc::decode(r)?,
            },
            25 => Command::CreateSampler {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                desc: gfx::get_sampler(r)?,
            },
            26 => Command::WriteTexture {
                queue: r.u64()?,
                dst: TextureCopy::decode(r)?,
                data: r.bytes()?.to_vec(),
                layout: gfx::get_layout(r)?,
                size: gfx::get_copy_extent(r)?,
            },
            27 => Command::CreateRenderPipeline {
                device: r.u64()?,
                id: r.u64()?,
                label: r.opt(Reader::string)?,
                desc: Box::new(RenderPipelineDesc::decode(r)?),
            },
            t => return Err(bad("command", t as u64)),
        })
    }

    /// Whether the guest waits for this command's answer (it ends a batch).
    pub fn wants_reply(&self) -> bool {
        matches!(
            self,
            Command::RequestAdapter
                | Command::RequestDevice { .. }
                | Command::PopErrorScope { .. }
                | Command::Poll { .. }
                | Command::MapBuffer { .. }
                | Command::GetCompilationInfo { .. }
        )
    }
}

/// One shader compilation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompilationMessage {
    /// The text.
    pub message: String,
    /// 0 error, 1 warning, 2 info.
    pub kind: u8,
    /// (line, column, byte offset, byte length) when known.
    pub location: Option<(u32, u32, u32, u32)>,
}

/// The host's answer to the last command of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Done; nothing to report.
    Ok,
    /// The adapter.
    Adapter(Box<AdapterDesc>),
    /// The device was created with these limits.
    Device(Box<wgpu_types::Limits>),
    /// The request failed (no adapter, device refused, map failed): the text says why.
    Failed(String),
    /// The mapped range's contents.
    Mapped(Vec<u8>),
    /// The popped error scope's error, if any.
    Scope(Option<GpuError>),
    /// Shader compilation messages.
    CompilationInfo(Vec<CompilationMessage>),
    /// Poll result: number of submissions completed so far, and whether the queue is empty.
    Polled {
        /// Submissions completed on this device's queue.
        completed: u64,
        /// No submitted work is pending.
        queue_empty: bool,
    },
    /// The whole request was refused before any command ran (malformed, too large).
    Refused(String),
    /// The host dropped this context: every device of it is lost, and every later request
    /// gets this answer.
    Lost(String),
}

impl Reply {
    /// Encodes the reply.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Reply::Ok => w.u16(1),
            Reply::Adapter(a) => {
                w.u16(2);
                w.str(&a.name);
                w.u32(a.vendor);
                w.u32(a.device);
                w.u8(a.device_type);
                w.str(&a.driver);
                w.str(&a.driver_info);
                encode_limits(w, &a.limits);
            }
            Reply::Device(l) => {
                w.u16(3);
                encode_limits(w, l);
            }
            Reply::Failed(s) => {
                w.u16(4);
                w.str(s);
            }
            Reply::Mapped(d) => {
                w.u16(5);
                w.bytes(d);
            }
            Reply::Scope(e) => {
                w.u16(6);
                w.opt(e, |w, e| e.encode(w));
            }
            Reply::CompilationInfo(m) => {
                w.u16(7);
                w.list(m, |w, m| {
                    w.str(&m.message);
                    w.u8(m.kind);
                    w.opt(&m.location, |w, l| {
                        w.u32(l.0);
                        w.u32(l.1);
                        w.u32(l.2);
                        w.u32(l.3);
                    });
                });
            }
            Reply::Polled {
                completed,
                queue_empty,
            } => {
                w.u16(8);
                w.u64(*completed);
                w.bool(*queue_empty);
            }
            Reply::Refused(s) => {
                w.u16(9);
                w.str(s);
            }
            Reply::Lost(s) => {
                w.u16(10);
                w.str(s);
            }
        }
    }

    /// Decodes a reply.
    pub fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(match r.u16()? {
            1 => Reply::Ok,
            2 => Reply::Adapter(Box::new(AdapterDesc {
                name: r.string()?,
                vendor: r.u32()?,
                device: r.u32()?,
                device_type: r.u8()?,
                driver: r.string()?,
                driver_info: r.string()?,
                limits: decode_limits(r)?,
            })),
            3 => Reply::Device(Box::new(decode_limits(r)?)),
            4 => Reply::Failed(r.string()?),
            5 => Reply::Mapped(r.bytes()?.to_vec()),
            6 => Reply::Scope(r.opt(GpuError::decode)?),
            7 => Reply::CompilationInfo(r.list(6, |r| {
                Ok(CompilationMessage {
                    message: r.string()?,
                    kind: r.u8()?,
                    location: r.opt(|r| Ok((r.u32()?, r.u32()?, r.u32()?, r.u32()?)))?,
                })
            })?),
            8 => Reply::Polled {
                completed: r.u64()?,
                queue_empty: r.bool()?,
            },
            9 => Reply::Refused(r.string()?),
            10 => Reply::Lost(r.string()?),
            t => return Err(bad("reply", t as u64)),
        })
    }
}
