//! The render slice of the backend: render passes, and the conversions of textures, copies
//! and render pipelines into the protocol's values.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use webgpu_wire::gfx::{
    self, ColorAttachment, DepthAttachment, Load, Ops, RenderPassDesc, RenderPipelineDesc, Stage,
    TexelLayout, TextureCopy, VertexBufferLayout,
};
use webgpu_wire::{EncoderCommand, Id};
use wgpu::custom::*;

use super::{buf_id, lock, obj_id, Obj, RemoteBuffer};
use crate::conn::Conn;

/// Bytes of bulk data per message: writes above this travel in parts (a message carries at
/// most 64 MiB).
pub(crate) const CHUNK: usize = 16 << 20;

/// The guest id behind a `wgpu` object of this backend (0 for a foreign one, which the host
/// reports as an unknown id).
pub(crate) trait WireId {
    fn wire_id(&self) -> Id;
}

macro_rules! wire_id_of_obj {
    ($($t:ty),*) => {$(
        impl WireId for $t {
            fn wire_id(&self) -> Id {
                obj_id(self.as_custom::<Obj>())
            }
        }
    )*};
}
wire_id_of_obj!(
    wgpu::Texture,
    wgpu::TextureView,
    wgpu::Sampler,
    wgpu::ShaderModule,
    wgpu::PipelineLayout
);

impl WireId for wgpu::Buffer {
    fn wire_id(&self) -> Id {
        self.as_custom::<RemoteBuffer>().map_or(0, |b| b.obj.id)
    }
}

pub(crate) fn id_of<T: WireId + ?Sized>(x: &T) -> Id {
    x.wire_id()
}

/// Whether the protocol carries aspect `a` (not the planes of video formats).
pub(crate) fn aspect_supported(a: wgpu::TextureAspect) -> bool {
    matches!(
        a,
        wgpu::TextureAspect::All
            | wgpu::TextureAspect::DepthOnly
            | wgpu::TextureAspect::StencilOnly
    )
}

/// The texture side of a copy, or what the protocol cannot carry.
pub(crate) fn texture_copy(t: &wgpu::TexelCopyTextureInfo<'_>) -> Result<TextureCopy, String> {
    if !aspect_supported(t.aspect) {
        return Err(format!("texture aspect {:?}", t.aspect));
    }
    Ok(TextureCopy {
        texture: id_of(t.texture),
        mip_level: t.mip_level,
        origin: t.origin,
        aspect: t.aspect,
    })
}

/// `write_texture` as messages of at most about [`CHUNK`] bytes: a large write is split by
/// rows (and images), each part with its own origin and the same row pitch. A write whose
/// layout cannot be split (no `bytes_per_row`, or data shorter than its layout says) goes as
/// one message, and the host reports what is wrong with it.
pub(crate) fn split_write(
    dst: TextureCopy,
    data: &[u8],
    layout: wgpu::TexelCopyBufferLayout,
    size: wgpu::Extent3d,
) -> Vec<(TextureCopy, &[u8], TexelLayout, wgpu::Extent3d)> {
    let whole = vec![(dst, data, TexelLayout::from(layout), size)];
    let Some(bpr) = layout.bytes_per_row.filter(|b| *b > 0) else {
        return whole;
    };
    if data.len() <= CHUNK {
        return whole;
    }
    let bpr = bpr as usize;
    let rows_per_image = layout.rows_per_image.unwrap_or(size.height) as usize;
    let rows_per_part = (CHUNK / bpr).max(1);
    let mut parts = Vec::new();
    for z in 0..size.depth_or_array_layers as usize {
        let mut row = 0;
        while row < size.height as usize {
            let n = rows_per_part.min(size.height as usize - row);
            let start = layout.offset as usize + (z * rows_per_image + row) * bpr;
            let end = start + n * bpr;
            let Some(part) = data.get(start..end.min(data.len())) else {
                return whole;
            };
            if part.is_empty() {
                return whole;
            }
            parts.push((
                TextureCopy {
                    origin: wgpu::Origin3d {
                        x: dst.origin.x,
                        y: dst.origin.y + row as u32,
                        z: dst.origin.z + z as u32,
                    },
                    ..dst
                },
                part,
                TexelLayout {
                    offset: 0,
                    bytes_per_row: Some(bpr as u32),
                    rows_per_image: None,
                },
                wgpu::Extent3d {
                    width: size.width,
                    height: n as u32,
                    depth_or_array_layers: 1,
                },
            ));
            row += n;
        }
    }
    parts
}

fn stage(
    module: &wgpu::ShaderModule,
    entry_point: Option<&str>,
    options: &wgpu::PipelineCompilationOptions<'_>,
) -> Stage {
    Stage {
        module: id_of(module),
        entry_point: entry_point.map(str::to_owned),
        constants: options
            .constants
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        zero_initialize_workgroup_memory: options.zero_initialize_workgroup_memory,
    }
}

/// A render pipeline descriptor in the protocol's terms, or what it cannot carry.
pub(crate) fn pipeline_desc(
    d: &wgpu::RenderPipelineDescriptor<'_>,
) -> Result<RenderPipelineDesc, String> {
    let unsupported_format = |f: wgpu::TextureFormat| {
        (!gfx::format_supported(f)).then(|| format!("texture format {f:?}"))
    };
    let mut buffers = Vec::with_capacity(d.vertex.buffers.len());
    for b in d.vertex.buffers {
        buffers.push(match b {
            None => None,
            Some(b) => {
                if let Some(a) = b
                    .attributes
                    .iter()
                    .find(|a| !gfx::vertex_format_supported(a.format))
                {
                    return Err(format!("vertex format {:?}", a.format));
                }
                Some(VertexBufferLayout {
                    array_stride: b.array_stride,
                    step_mode: b.step_mode,
                    attributes: b.attributes.to_vec(),
                })
            }
        });
    }
    if let Some(ds) = &d.depth_stencil {
        if let Some(e) = unsupported_format(ds.format) {
            return Err(e);
        }
    }
    let fragment = match &d.fragment {
        None => None,
        Some(f) => {
            for t in f.targets.iter().flatten() {
                if let Some(e) = unsupported_format(t.format) {
                    return Err(e);
                }
            }
            Some((
                stage(f.module, f.entry_point, &f.compilation_options),
                f.targets.to_vec(),
            ))
        }
    };
    Ok(RenderPipelineDesc {
        layout: d.layout.map(id_of),
        vertex: stage(
            d.vertex.module,
            d.vertex.entry_point,
            &d.vertex.compilation_options,
        ),
        buffers,
        primitive: d.primitive,
        depth_stencil: d.depth_stencil.clone(),
        multisample: d.multisample,
        fragment,
    })
}

fn load<V: Copy>(l: wgpu::LoadOp<V>, conn: &Conn, device: Id) -> Load<V> {
    match l {
        wgpu::LoadOp::Clear(v) => Load::Clear(v),
        wgpu::LoadOp::Load => Load::Load,
        wgpu::LoadOp::DontCare(_) => {
            conn.unsupported(device, "LoadOp::DontCare");
            Load::Load
        }
    }
}

/// A render pass being recorded: its commands gather here and join the encoder's list,
/// closed by `EndRenderPass`, when the pass ends (is dropped).
#[derive(Debug)]
pub(crate) struct RemotePass {
    conn: Arc<Conn>,
    device: Id,
    cmds: Vec<EncoderCommand>,
    out: Arc<Mutex<Vec<EncoderCommand>>>,
}

impl RemotePass {
    pub(crate) fn begin(
        conn: Arc<Conn>,
        device: Id,
        out: Arc<Mutex<Vec<EncoderCommand>>>,
        desc: &wgpu::RenderPassDescriptor<'_>,
    ) -> Self {
        if desc.timestamp_writes.is_some() {
            conn.unsupported(device, "pass timestamp writes");
        }
        if desc.occlusion_query_set.is_some() {
            conn.unsupported(device, "occlusion queries");
        }
        if desc.multiview_mask.is_some() {
            conn.unsupported(device, "multiview");
        }
        let color_attachments = desc
            .color_attachments
            .iter()
            .map(|a| {
                a.as_ref().map(|a| ColorAttachment {
                    view: id_of(a.view),
                    depth_slice: a.depth_slice,
                    resolve_target: a.resolve_target.map(id_of),
                    load: load(a.ops.load, &conn, device),
                    store: a.ops.store == wgpu::StoreOp::Store,
                })
            })
            .collect();
        let depth_stencil = desc
            .depth_stencil_attachment
            .as_ref()
            .map(|d| DepthAttachment {
                view: id_of(d.view),
                depth_ops: d.depth_ops.map(|o| Ops {
                    load: load(o.load, &conn, device),
                    store: o.store == wgpu::StoreOp::Store,
                }),
                stencil_ops: d.stencil_ops.map(|o| Ops {
                    load: load(o.load, &conn, device),
                    store: o.store == wgpu::StoreOp::Store,
                }),
            });
        let begin = EncoderCommand::BeginRenderPass(Box::new(RenderPassDesc {
            label: desc.label.map(str::to_owned),
            color_attachments,
            depth_stencil,
        }));
        RemotePass {
            conn,
            device,
            cmds: vec![begin],
            out,
        }
    }

    fn unsupported(&self, what: &str) {
        self.conn.unsupported(self.device, what);
    }
}

impl Drop for RemotePass {
    fn drop(&mut self) {
        self.cmds.push(EncoderCommand::EndRenderPass);
        lock(&self.out).append(&mut self.cmds);
    }
}

fn pair(r: Range<u32>) -> (u32, u32) {
    (r.start, r.end)
}

impl RenderPassInterface for RemotePass {
    fn set_pipeline(&mut self, p: &DispatchRenderPipeline) {
        self.cmds.push(EncoderCommand::SetRenderPipeline {
            pipeline: obj_id(p.as_custom::<Obj>()),
        });
    }
    fn set_bind_group(&mut self, index: u32, g: Option<&DispatchBindGroup>, offsets: &[u32]) {
        self.cmds.push(EncoderCommand::SetBindGroup {
            index,
            group: g.map(|g| obj_id(g.as_custom::<Obj>())),
            offsets: offsets.to_vec(),
        });
    }
    fn set_index_buffer(
        &mut self,
        b: &DispatchBuffer,
        format: wgpu::IndexFormat,
        offset: wgpu::BufferAddress,
        size: Option<wgpu::BufferSize>,
    ) {
        self.cmds.push(EncoderCommand::SetIndexBuffer {
            buffer: buf_id(b),
            format,
            offset,
            size: size.map(|s| s.get()),
        });
    }
    fn set_vertex_buffer(
        &mut self,
        slot: u32,
        b: Option<&DispatchBuffer>,
        offset: wgpu::BufferAddress,
        size: Option<wgpu::BufferSize>,
    ) {
        self.cmds.push(EncoderCommand::SetVertexBuffer {
            slot,
            buffer: b.map(buf_id),
            offset,
            size: size.map(|s| s.get()),
        });
    }
    fn set_immediates(&mut self, _o: u32, _d: &[u8]) {
        self.unsupported("set_immediates");
    }
    fn set_blend_constant(&mut self, c: wgpu::Color) {
        self.cmds
            .push(EncoderCommand::SetBlendConstant([c.r, c.g, c.b, c.a]));
    }
    fn set_scissor_rect(&mut self, x: u32, y: u32, w: u32, h: u32) {
        self.cmds.push(EncoderCommand::SetScissorRect([x, y, w, h]));
    }
    fn set_viewport(&mut self, x: f32, y: f32, w: f32, h: f32, min: f32, max: f32) {
        self.cmds
            .push(EncoderCommand::SetViewport([x, y, w, h, min, max]));
    }
    fn set_stencil_reference(&mut self, r: u32) {
        self.cmds.push(EncoderCommand::SetStencilReference(r));
    }
    fn draw(&mut self, vertices: Range<u32>, instances: Range<u32>) {
        self.cmds.push(EncoderCommand::Draw {
            vertices: pair(vertices),
            instances: pair(instances),
        });
    }
    fn draw_indexed(&mut self, indices: Range<u32>, base_vertex: i32, instances: Range<u32>) {
        self.cmds.push(EncoderCommand::DrawIndexed {
            indices: pair(indices),
            base_vertex,
            instances: pair(instances),
        });
    }
    fn draw_mesh_tasks(&mut self, _x: u32, _y: u32, _z: u32) {
        self.unsupported("mesh shaders");
    }
    fn draw_indirect(&mut self, b: &DispatchBuffer, offset: wgpu::BufferAddress) {
        self.cmds.push(EncoderCommand::DrawIndirect {
            buffer: buf_id(b),
            offset,
        });
    }
    fn draw_indexed_indirect(&mut self, b: &DispatchBuffer, offset: wgpu::BufferAddress) {
        self.cmds.push(EncoderCommand::DrawIndexedIndirect {
            buffer: buf_id(b),
            offset,
        });
    }
    fn draw_mesh_tasks_indirect(&mut self, _b: &DispatchBuffer, _o: wgpu::BufferAddress) {
        self.unsupported("mesh shaders");
    }
    fn multi_draw_indirect(&mut self, _b: &DispatchBuffer, _o: wgpu::BufferAddress, _c: u32) {
        self.unsupported("multi-draw");
    }
    fn multi_draw_indexed_indirect(
        &mut self,
        _b: &DispatchBuffer,
        _o: wgpu::BufferAddress,
        _c: u32,
    ) {
        self.unsupported("multi-draw");
    }
    fn multi_draw_indirect_count(
        &mut self,
        _b: &DispatchBuffer,
        _o: wgpu::BufferAddress,
        _cb: &DispatchBuffer,
        _co: wgpu::BufferAddress,
        _m: u32,
    ) {
        self.unsupported("multi-draw");
    }
    fn multi_draw_mesh_tasks_indirect(
        &mut self,
        _b: &DispatchBuffer,
        _o: wgpu::BufferAddress,
        _c: u32,
    ) {
        self.unsupported("mesh shaders");
    }
    fn multi_draw_indexed_indirect_count(
        &mut self,
        _b: &DispatchBuffer,
        _o: wgpu::BufferAddress,
        _cb: &DispatchBuffer,
        _co: wgpu::BufferAddress,
        _m: u32,
    ) {
        self.unsupported("multi-draw");
    }
    fn multi_draw_mesh_tasks_indirect_count(
        &mut self,
        _b: &DispatchBuffer,
        _o: wgpu::BufferAddress,
        _cb: &DispatchBuffer,
        _co: wgpu::BufferAddress,
        _m: u32,
    ) {
        self.unsupported("mesh shaders");
    }
    fn insert_debug_marker(&mut self, l: &str) {
        self.cmds
            .push(EncoderCommand::InsertDebugMarker(l.to_owned()));
    }
    fn push_debug_group(&mut self, l: &str) {
        self.cmds.push(EncoderCommand::PushDebugGroup(l.to_owned()));
    }
    fn pop_debug_group(&mut self) {
        self.cmds.push(EncoderCommand::PopDebugGroup);
    }
    fn write_timestamp(&mut self, _q: &DispatchQuerySet, _i: u32) {
        self.unsupported("timestamp queries");
    }
    fn begin_occlusion_query(&mut self, _i: u32) {
        self.unsupported("occlusion queries");
    }
    fn end_occlusion_query(&mut self) {}
    fn begin_pipeline_statistics_query(&mut self, _q: &DispatchQuerySet, _i: u32) {
        self.unsupported("pipeline statistics queries");
    }
    fn end_pipeline_statistics_query(&mut self) {}
    fn execute_bundles(&mut self, _b: &mut dyn Iterator<Item = &DispatchRenderBundle>) {
        self.unsupported("render bundles");
    }
}
