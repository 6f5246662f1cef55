//! Scanouts and the cursor: what each virtual display shows, composited on the GPU into one
//! RGBA target texture per scanout, and read back as screenshots.

use std::path::Path;

use super::protocol::Rect;

/// Largest cursor image accepted (the spec's cursor is 64×64).
pub const MAX_CURSOR_SIZE: u32 = 64;

const SHADER: &str = r#"
struct Params {
    // Destination rectangle in target pixels: x, y, w, h (x, y may be negative for cursors).
    dst: vec4<f32>,
    // Target width, height; source origin x, y in the source texture.
    misc: vec4<f32>,
    // x: 1 = force alpha to 1.
    flags: vec4<u32>,
};
@group(0) @binding(0) var src: texture_2d<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@vertex
fn vs(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    let corner = vec2<f32>(f32(i & 1u), f32((i >> 1u) & 1u));
    let px = p.dst.xy + corner * p.dst.zw;
    let ndc = vec2<f32>(px.x / p.misc.x * 2.0 - 1.0, 1.0 - px.y / p.misc.y * 2.0);
    return vec4<f32>(ndc, 0.0, 1.0);
}

@fragment
fn fs(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let rel = floor(pos.xy) - p.dst.xy + p.misc.zw;
    let dims = vec2<f32>(textureDimensions(src));
    let c = clamp(rel, vec2<f32>(0.0), dims - vec2<f32>(1.0));
    var col = textureLoad(src, vec2<i32>(c), 0);
    if (p.flags.x == 1u) {
        col.a = 1.0;
    }
    return col;
}
"#;

/// Size of the uniform block.
const PARAMS_SIZE: u64 = 48;

/// The shared GPU objects of the compositor (one per wgpu device): the cursor's blend
/// pipelines, one per scanout texture format. Scanout pixels themselves are copied
/// (`copy_texture_to_texture`), never shaded.
#[derive(Debug)]
pub struct Compositor {
    layout: wgpu::BindGroupLayout,
    blend_bgra: wgpu::RenderPipeline,
    blend_rgba: wgpu::RenderPipeline,
}

impl Compositor {
    /// Builds the pipelines.
    pub fn new(device: &wgpu::Device) -> Compositor {
        let (module, layout, pl) = draw_layout(
            device,
            "virtio-gpu cursor",
            SHADER,
            &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                },
                uniform_entry(1, wgpu::ShaderStages::VERTEX_FRAGMENT, PARAMS_SIZE),
            ],
        );
        let (blend_bgra, blend_rgba) = pipelines(
            device,
            "virtio-gpu cursor",
            (&pl, &module),
            wgpu::PrimitiveTopology::TriangleStrip,
            Some(wgpu::BlendState::ALPHA_BLENDING),
        );
        Compositor {
            blend_bgra,
            blend_rgba,
            layout,
        }
    }

    fn blend(&self, format: wgpu::TextureFormat) -> &wgpu::RenderPipeline {
        if format == wgpu::TextureFormat::Bgra8Unorm {
            &self.blend_bgra
        } else {
            &self.blend_rgba
        }
    }
}

/// A uniform block of `size` bytes at `binding`.
pub(crate) fn uniform_entry(
    binding: u32,
    visibility: wgpu::ShaderStages,
    size: u64,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: wgpu::BufferSize::new(size),
        },
        count: None,
    }
}

/// The WGSL module `source`, a bind group layout of `entries` and a pipeline layout of that
/// one group, all labelled `label`.
pub(crate) fn draw_layout(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    entries: &[wgpu::BindGroupLayoutEntry],
) -> (
    wgpu::ShaderModule,
    wgpu::BindGroupLayout,
    wgpu::PipelineLayout,
) {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries,
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    (module, layout, pl)
}

/// Render pipelines of a shader module (entry points `vs` and `fs`, no vertex buffers) and
/// its layout, drawing into a `Bgra8Unorm` and into an `Rgba8Unorm` target.
pub(crate) fn pipelines(
    device: &wgpu::Device,
    label: &str,
    (layout, module): (&wgpu::PipelineLayout, &wgpu::ShaderModule),
    topology: wgpu::PrimitiveTopology,
    blend: Option<wgpu::BlendState>,
) -> (wgpu::RenderPipeline, wgpu::RenderPipeline) {
    let make = |format| {
        device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some(label),
            layout: Some(layout),
            vertex: wgpu::VertexState {
                module,
                entry_point: Some("vs"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState {
                topology,
                ..Default::default()
            },
            depth_stencil: None,
            multisample: Default::default(),
            fragment: Some(wgpu::FragmentState {
                module,
                entry_point: Some("fs"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    blend,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        })
    };
    (
        make(wgpu::TextureFormat::Bgra8Unorm),
        make(wgpu::TextureFormat::Rgba8Unorm),
    )
}

/// One draw: a source texture, a destination rectangle and its uniform block.
#[derive(Debug)]
pub struct Layer {
    params: wgpu::Buffer,
    bind: wgpu::BindGroup,
}

impl Layer {
    /// A layer sampling `view`.
    pub fn new(device: &wgpu::Device, comp: &Compositor, view: &wgpu::TextureView) -> Layer {
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("virtio-gpu layer"),
            size: PARAMS_SIZE,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("virtio-gpu layer"),
            layout: &comp.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(view),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: params.as_entire_binding(),
                },
            ],
        });
        Layer { params, bind }
    }

    /// Sets where the layer lands (`dst_x`, `dst_y`, `w`, `h` in target pixels), which source
    /// pixel maps to its top-left corner, and whether alpha is forced to 1.
    pub fn set(
        &self,
        queue: &wgpu::Queue,
        dst: (i64, i64, u32, u32),
        target: (u32, u32),
        src_origin: (u32, u32),
        opaque: bool,
    ) {
        let mut b = [0u8; PARAMS_SIZE as usize];
        let f = [
            dst.0 as f32,
            dst.1 as f32,
            dst.2 as f32,
            dst.3 as f32,
            target.0 as f32,
            target.1 as f32,
            src_origin.0 as f32,
            src_origin.1 as f32,
        ];
        for (i, v) in f.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[32..36].copy_from_slice(&(opaque as u32).to_le_bytes());
        queue.write_buffer(&self.params, 0, &b);
    }
}

/// Dirty rectangles kept per scanout before they are merged into their bounding box.
const MAX_DIRTY_RECTS: usize = 16;

/// What a scanout shows.
#[derive(Debug)]
pub struct Scanout {
    /// The display mode offered in GET_DISPLAY_INFO / GET_EDID.
    pub mode: (u32, u32),
    /// Resource shown (0: disabled).
    pub resource_id: u32,
    /// Part of the resource shown; the scanout's size is this rectangle's size.
    pub rect: Rect,
    /// Whether the shown resource's format has no alpha (screenshots show it opaque).
    pub opaque: bool,
    /// Areas (scanout coordinates) to recomposite at the next present.
    pub dirty: Vec<Rect>,
    /// Whether a RESOURCE_FLUSH asked for the next present (counted as a frame).
    pub flushed: bool,
}

impl Scanout {
    /// A disabled scanout offering `mode`.
    pub fn new(mode: (u32, u32)) -> Scanout {
        Scanout {
            mode,
            resource_id: 0,
            rect: Rect::default(),
            opaque: true,
            dirty: Vec::new(),
            flushed: false,
        }
    }

    /// Whether a resource is shown.
    pub fn is_enabled(&self) -> bool {
        self.resource_id != 0
    }

    /// Stops showing anything.
    pub fn disable(&mut self) {
        self.resource_id = 0;
        self.rect = Rect::default();
        self.dirty.clear();
        self.flushed = false;
    }

    /// Adds an area (scanout coordinates, clipped) to recomposite.
    pub fn mark_dirty(&mut self, r: Rect) {
        let Some(r) = r.intersect(&Rect::new(0, 0, self.rect.width, self.rect.height)) else {
            return;
        };
        if self.dirty.iter().any(|d| d.intersect(&r) == Some(r)) {
            return;
        }
        if self.dirty.len() >= MAX_DIRTY_RECTS {
            let all = self.dirty.iter().fold(r, |a, d| a.union(d));
            self.dirty.clear();
            self.dirty.push(all);
        } else {
            self.dirty.push(r);
        }
    }
}

/// The hardware cursor: where it is and how large its image is (the image, a copy of a
/// resource's pixels taken at UPDATE_CURSOR, is the renderer's).
#[derive(Debug)]
pub struct Cursor {
    /// Scanout it is on.
    pub scanout: u32,
    /// Hot-spot position in scanout pixels.
    pub x: u32,
    /// Hot-spot position in scanout pixels.
    pub y: u32,
    /// Hot spot inside the image.
    pub hot: (u32, u32),
    /// Image size.
    pub size: (u32, u32),
    /// Whether the source format has no alpha.
    pub opaque: bool,
}

impl Cursor {
    /// The rectangle it covers, clipped to a `w`×`h` scanout.
    pub fn area(&self, w: u32, h: u32) -> Option<Rect> {
        let x0 = self.x as i64 - self.hot.0 as i64;
        let y0 = self.y as i64 - self.hot.1 as i64;
        let cx0 = x0.clamp(0, w as i64);
        let cy0 = y0.clamp(0, h as i64);
        let cx1 = (x0 + self.size.0 as i64).clamp(0, w as i64);
        let cy1 = (y0 + self.size.1 as i64).clamp(0, h as i64);
        (cx1 > cx0 && cy1 > cy0).then(|| {
            Rect::new(
                cx0 as u32,
                cy0 as u32,
                (cx1 - cx0) as u32,
                (cy1 - cy0) as u32,
            )
        })
    }
}

/// A composition target of `rect`'s size.
pub fn create_target(
    device: &wgpu::Device,
    rect: Rect,
    format: wgpu::TextureFormat,
) -> (wgpu::Texture, wgpu::TextureView) {
    let t = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("virtio-gpu scanout"),
        size: wgpu::Extent3d {
            width: rect.width,
            height: rect.height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT
            | wgpu::TextureUsages::COPY_DST
            | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let v = t.create_view(&Default::default());
    (t, v)
}

/// Records the recomposition of a scanout's `dirty` areas (scanout coordinates) into `enc`:
/// each area is copied from the part `rect` of the resource into `target`, then the cursor
/// (with its draw) is blended on top where it overlaps them. Returns false if there was
/// nothing to do.
#[allow(clippy::too_many_arguments)]
pub fn composite(
    enc: &mut wgpu::CommandEncoder,
    queue: &wgpu::Queue,
    comp: &Compositor,
    target: &(wgpu::Texture, wgpu::TextureView),
    rect: Rect,
    dirty: Vec<Rect>,
    source: &wgpu::Texture,
    cursor: Option<(&Cursor, &Layer)>,
) -> bool {
    let (target, view) = target;
    if dirty.is_empty() {
        return false;
    }
    let (w, h) = (rect.width, rect.height);
    for d in &dirty {
        enc.copy_texture_to_texture(
            wgpu::TexelCopyTextureInfo {
                texture: source,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: rect.x + d.x,
                    y: rect.y + d.y,
                    z: 0,
                },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyTextureInfo {
                texture: target,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: d.x,
                    y: d.y,
                    z: 0,
                },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d {
                width: d.width,
                height: d.height,
                depth_or_array_layers: 1,
            },
        );
    }
    let Some((c, layer)) = cursor else {
        return true;
    };
    let Some(area) = c.area(w, h) else {
        return true;
    };
    let scissors: Vec<Rect> = dirty.iter().filter_map(|d| d.intersect(&area)).collect();
    if scissors.is_empty() {
        return true;
    }
    layer.set(
        queue,
        (
            c.x as i64 - c.hot.0 as i64,
            c.y as i64 - c.hot.1 as i64,
            c.size.0,
            c.size.1,
        ),
        (w, h),
        (0, 0),
        c.opaque,
    );
    let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
        label: Some("virtio-gpu cursor"),
        color_attachments: &[Some(wgpu::RenderPassColorAttachment {
            view,
            depth_slice: None,
            resolve_target: None,
            ops: wgpu::Operations {
                load: wgpu::LoadOp::Load,
                store: wgpu::StoreOp::Store,
            },
        })],
        ..Default::default()
    });
    pass.set_pipeline(comp.blend(target.format()));
    pass.set_bind_group(0, &layer.bind, &[]);
    for r in scissors {
        pass.set_scissor_rect(r.x, r.y, r.width, r.height);
        pass.draw(0..4, 0..1);
    }
    true
}

/// An RGBA8 image, rows top to bottom, 4 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbaImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes.
    pub data: Vec<u8>,
}

impl RgbaImage {
    /// The pixel at (x, y), or `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 4;
        self.data.get(i..i + 4)?.try_into().ok()
    }

    /// Writes the image as a PNG file.
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        w.write_image_data(&self.data)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        w.finish()
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
    }
}

/// Reads `rect` of `texture` (`Bgra8Unorm` or `Rgba8Unorm`) back through `rb` and calls `f`
/// with the pixels as B, G, R, X bytes, rows packed (`rect.width * 4` bytes each). A
/// `Bgra8Unorm` area whose rows need no padding is handed over straight from the mapped
/// buffer; others are packed (and swizzled) into a vector first.
pub fn with_region_bgrx<R>(
    rb: &mut Readback,
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
    rect: Rect,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, String> {
    if rect.width == 0 || rect.height == 0 || !rect.fits_in(texture.width(), texture.height()) {
        return Err(format!(
            "area {rect:?} is outside the {}x{} image",
            texture.width(),
            texture.height()
        ));
    }
    let bgra = texture.format() == wgpu::TextureFormat::Bgra8Unorm;
    let row = rect.width as usize * 4;
    rb.read(
        device,
        queue,
        texture,
        rect,
        "display readback",
        |rows, pitch| {
            if bgra && pitch == row {
                return f(rows);
            }
            let mut data = pack_rows(rows, pitch, row, rect.height as usize);
            if !bgra {
                for px in data.chunks_exact_mut(4) {
                    px.swap(0, 2);
                }
            }
            f(&data)
        },
    )
}

/// The first `row` bytes of each of `height` rows `pitch` bytes apart, packed.
fn pack_rows(rows: &[u8], pitch: usize, row: usize, height: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(row * height);
    for r in 0..height {
        data.extend_from_slice(&rows[r * pitch..r * pitch + row]);
    }
    data
}

/// The buffer textures are read back through, kept from one read to the next: the display
/// path reads every flushed area, and a fresh multi-megabyte buffer each time costs its
/// allocation and page faults.
#[derive(Debug, Default)]
pub struct Readback {
    buf: Option<wgpu::Buffer>,
}

impl Readback {
    /// Copies `rect` of `texture` to the CPU and calls `f` with the mapped rows and their
    /// pitch (`rect.width * 4` rounded up to wgpu's row alignment), in the texture's own byte
    /// order; `what` names the copy in errors.
    pub fn read<R>(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        texture: &wgpu::Texture,
        rect: Rect,
        what: &str,
        f: impl FnOnce(&[u8], usize) -> R,
    ) -> Result<R, String> {
        let (w, h) = (rect.width, rect.height);
        let pitch = (w as u64 * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as u64);
        let size = pitch * h as u64;
        let label = format!("virtio-gpu {what}");
        if self.buf.as_ref().is_none_or(|b| b.size() < size) {
            self.buf = None;
        }
        let buf = self.buf.get_or_insert_with(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("virtio-gpu readback"),
                size,
                usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
                mapped_at_creation: false,
            })
        });
        let r = copy_and_map(device, queue, texture, rect, buf, pitch, &label).and_then(|()| {
            let r = {
                let view = buf
                    .slice(..size)
                    .get_mapped_range()
                    .map_err(|e| format!("reading the mapped {label} buffer: {e}"))?;
                f(&view, pitch as usize)
            };
            buf.unmap();
            Ok(r)
        });
        if r.is_err() {
            // Whatever state the failed map left it in, the next read starts afresh.
            self.buf = None;
        }
        r
    }
}

/// Records and submits the copy of `rect` of `texture` into `buf` (rows `pitch` bytes apart),
/// then maps that part of `buf` for reading and waits for it.
fn copy_and_map(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
    rect: Rect,
    buf: &wgpu::Buffer,
    pitch: u64,
    label: &str,
) -> Result<(), String> {
    let (w, h) = (rect.width, rect.height);
    let mut enc =
        device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    enc.copy_texture_to_buffer(
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: rect.x,
                y: rect.y,
                z: 0,
            },
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer: buf,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(pitch as u32),
                rows_per_image: Some(h),
            },
        },
        wgpu::Extent3d {
            width: w,
            height: h,
            depth_or_array_layers: 1,
        },
    );
    let idx = queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    buf.slice(..pitch * h as u64)
        .map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(idx),
            timeout: None,
        })
        .map_err(|e| format!("waiting for the {label} copy: {e}"))?;
    rx.recv()
        .map_err(|e| format!("{label} map callback lost: {e}"))?
        .map_err(|e| format!("mapping the {label} buffer: {e}"))
}

/// Reads a scanout's composited image back to the CPU as RGBA (alpha forced to 255 when
/// `opaque`).
pub fn read_back(
    rb: &mut Readback,
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
    opaque: bool,
) -> Result<RgbaImage, String> {
    let (w, h) = (texture.width(), texture.height());
    let full = Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    let row = w as usize * 4;
    let mut data = rb.read(device, queue, texture, full, "screenshot", |rows, pitch| {
        pack_rows(rows, pitch, row, h as usize)
    })?;
    let bgra = texture.format() == wgpu::TextureFormat::Bgra8Unorm;
    if bgra || opaque {
        for px in data.chunks_exact_mut(4) {
            if bgra {
                px.swap(0, 2);
            }
            if opaque {
                px[3] = 255;
            }
        }
    }
    Ok(RgbaImage {
        width: w,
        height: h,
        data,
    })
}
