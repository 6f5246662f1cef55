//! The render slice: textures, views, samplers, render pipelines and render passes.
//!
//! As in `exec.rs`, ids are looked up in this context's table only and every value the `wgpu`
//! front end would panic on is refused first; the rest is wgpu-core's to validate, so the
//! guest sees the errors a native program would.

use webgpu_wire::gfx::{
    texture_bytes, Load, RenderPassDesc, RenderPipelineDesc, TextureCopy, TextureDesc,
    TextureViewDesc,
};
use webgpu_wire::{EncoderCommand, GpuError, Id, Reply};

use crate::context::{oom, validation, CmdResult, Context, Entry, Object};
use crate::exec::label;

/// Whether `desc` is within `limits` (size per dimension, array layers, mips, samples): only
/// then is its byte count meaningful; outside them wgpu-core refuses it before allocating.
fn within_limits(desc: &TextureDesc, limits: &wgpu::Limits) -> bool {
    let s = desc.size;
    let dims_ok = match desc.dimension {
        wgpu::TextureDimension::D1 => {
            s.width <= limits.max_texture_dimension_1d
                && s.height == 1
                && s.depth_or_array_layers == 1
        }
        wgpu::TextureDimension::D2 => {
            s.width <= limits.max_texture_dimension_2d
                && s.height <= limits.max_texture_dimension_2d
                && s.depth_or_array_layers <= limits.max_texture_array_layers
        }
        wgpu::TextureDimension::D3 => {
            s.width <= limits.max_texture_dimension_3d
                && s.height <= limits.max_texture_dimension_3d
                && s.depth_or_array_layers <= limits.max_texture_dimension_3d
        }
    };
    dims_ok
        && desc.mip_level_count <= s.max_mips(desc.dimension).max(1)
        && matches!(desc.sample_count, 1 | 4)
}

impl Context {
    pub(crate) fn texture_copy(
        &self,
        c: &TextureCopy,
    ) -> Result<wgpu::TexelCopyTextureInfo<'_>, GpuError> {
        Ok(wgpu::TexelCopyTextureInfo {
            texture: get!(self, c.texture, Texture)?,
            mip_level: c.mip_level,
            origin: c.origin,
            aspect: c.aspect,
        })
    }

    pub(crate) fn create_texture(
        &mut self,
        device: Id,
        id: Id,
        l: Option<String>,
        desc: TextureDesc,
    ) -> CmdResult {
        let usage = wgpu::TextureUsages::from_bits(desc.usage)
            .ok_or_else(|| validation(format!("unknown texture usage bits {:#x}", desc.usage)))?;
        let d = self.device(device)?;
        // Within the device's limits the budget decides first; outside them wgpu refuses
        // without allocating: let it say so, in its words (the native error).
        let charge = if within_limits(&desc, &d.device.limits()) {
            texture_bytes(&desc).ok_or_else(|| {
                oom("the texture's size in bytes does not fit in 64 bits".to_owned())
            })?
        } else {
            0
        };
        self.reserve(id, charge)?;
        let t = self
            .device(device)?
            .device
            .create_texture(&wgpu::TextureDescriptor {
                label: label(&l),
                size: desc.size,
                mip_level_count: desc.mip_level_count,
                sample_count: desc.sample_count,
                dimension: desc.dimension,
                format: desc.format,
                usage,
                view_formats: &desc.view_formats,
            });
        self.insert(device, id, charge, Object::Texture(t));
        Ok(Reply::Ok)
    }

    pub(crate) fn create_view(
        &mut self,
        texture: Id,
        id: Id,
        l: Option<String>,
        desc: TextureViewDesc,
    ) -> CmdResult {
        self.reserve(id, 0)?;
        let usage = match desc.usage {
            None => None,
            Some(u) => Some(
                wgpu::TextureUsages::from_bits(u)
                    .ok_or_else(|| validation(format!("unknown texture usage bits {u:#x}")))?,
            ),
        };
        let dev = self.objects.get(&texture).map_or(0, |e| e.device);
        let v = get!(self, texture, Texture)?.create_view(&wgpu::TextureViewDescriptor {
            label: label(&l),
            format: desc.format,
            dimension: desc.dimension,
            usage,
            aspect: desc.aspect,
            base_mip_level: desc.base_mip_level,
            mip_level_count: desc.mip_level_count,
            base_array_layer: desc.base_array_layer,
            array_layer_count: desc.array_layer_count,
        });
        self.insert(dev, id, 0, Object::TextureView(v));
        Ok(Reply::Ok)
    }

    pub(crate) fn create_sampler(
        &mut self,
        device: Id,
        id: Id,
        l: Option<String>,
        desc: wgpu::wgt::SamplerDescriptor<()>,
    ) -> CmdResult {
        self.reserve(id, 0)?;
        finite(
            &[desc.lod_min_clamp, desc.lod_max_clamp],
            "sampler LOD clamp",
        )?;
        let s = self
            .device(device)?
            .device
            .create_sampler(&desc.map_label(|_| label(&l)));
        self.insert(device, id, 0, Object::Sampler(s));
        Ok(Reply::Ok)
    }

    pub(crate) fn create_render_pipeline(
        &mut self,
        device: Id,
        id: Id,
        l: Option<String>,
        desc: RenderPipelineDesc,
    ) -> CmdResult {
        self.reserve(id, 0)?;
        if let Some(ds) = &desc.depth_stencil {
            finite(&[ds.bias.slope_scale, ds.bias.clamp], "depth bias")?;
        }
        let layout = match desc.layout {
            None => None,
            Some(p) => Some(get!(self, p, PipelineLayout)?),
        };
        let vmodule = get!(self, desc.vertex.module, ShaderModule)?;
        let vconst: Vec<(&str, f64)> = desc
            .vertex
            .constants
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        let buffers: Vec<Option<wgpu::VertexBufferLayout>> = desc
            .buffers
            .iter()
            .map(|b| {
                b.as_ref().map(|b| wgpu::VertexBufferLayout {
                    array_stride: b.array_stride,
                    step_mode: b.step_mode,
                    attributes: &b.attributes,
                })
            })
            .collect();
        let (fmodule, fconst) = match &desc.fragment {
            None => (None, Vec::new()),
            Some((stage, _)) => (
                Some(get!(self, stage.module, ShaderModule)?),
                stage
                    .constants
                    .iter()
                    .map(|(k, v)| (k.as_str(), *v))
                    .collect::<Vec<(&str, f64)>>(),
            ),
        };
        let fragment = match (&desc.fragment, fmodule) {
            (Some((stage, targets)), Some(module)) => Some(wgpu::FragmentState {
                module,
                entry_point: stage.entry_point.as_deref(),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &fconst,
                    zero_initialize_workgroup_memory: stage.zero_initialize_workgroup_memory,
                },
                targets,
            }),
            _ => None,
        };
        let p =
            self.device(device)?
                .device
                .create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                    label: label(&l),
                    layout,
                    vertex: wgpu::VertexState {
                        module: vmodule,
                        entry_point: desc.vertex.entry_point.as_deref(),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &vconst,
                            zero_initialize_workgroup_memory: desc
                                .vertex
                                .zero_initialize_workgroup_memory,
                        },
                        buffers: &buffers,
                    },
                    primitive: desc.primitive,
                    depth_stencil: desc.depth_stencil.clone(),
                    multisample: desc.multisample,
                    fragment,
                    multiview_mask: None,
                    cache: None,
                });
        self.insert(device, id, 0, Object::RenderPipeline(p));
        Ok(Reply::Ok)
    }

    /// Records one render pass: `desc` and the commands between its begin and end.
    pub(crate) fn record_render_pass(
        &self,
        enc: &mut wgpu::CommandEncoder,
        desc: &RenderPassDesc,
        cmds: &[EncoderCommand],
    ) -> Result<(), GpuError> {
        let mut colors = Vec::with_capacity(desc.color_attachments.len());
        for a in &desc.color_attachments {
            colors.push(match a {
                None => None,
                Some(a) => Some(wgpu::RenderPassColorAttachment {
                    view: get!(self, a.view, TextureView)?,
                    depth_slice: a.depth_slice,
                    resolve_target: match a.resolve_target {
                        None => None,
                        Some(r) => Some(get!(self, r, TextureView)?),
                    },
                    ops: wgpu::Operations {
                        load: load_op(a.load),
                        store: store_op(a.store),
                    },
                }),
            });
        }
        let depth = match &desc.depth_stencil {
            None => None,
            Some(d) => Some(wgpu::RenderPassDepthStencilAttachment {
                view: get!(self, d.view, TextureView)?,
                depth_ops: d.depth_ops.map(|o| wgpu::Operations {
                    load: load_op(o.load),
                    store: store_op(o.store),
                }),
                stencil_ops: d.stencil_ops.map(|o| wgpu::Operations {
                    load: load_op(o.load),
                    store: store_op(o.store),
                }),
            }),
        };
        let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: label(&desc.label),
            color_attachments: &colors,
            depth_stencil_attachment: depth,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        for c in cmds {
            self.render_command(&mut pass, c)?;
        }
        Ok(())
    }

    fn render_command(
        &self,
        pass: &mut wgpu::RenderPass<'_>,
        c: &EncoderCommand,
    ) -> Result<(), GpuError> {
        use EncoderCommand as E;
        match c {
            E::SetRenderPipeline { pipeline } => {
                pass.set_pipeline(get!(self, *pipeline, RenderPipeline)?)
            }
            E::SetBindGroup {
                index,
                group,
                offsets,
            } => {
                let g = match group {
                    None => None,
                    Some(g) => Some(get!(self, *g, BindGroup)?),
                };
                pass.set_bind_group(*index, g, offsets);
            }
            E::SetVertexBuffer {
                slot,
                buffer,
                offset,
                size,
            } => match buffer {
                None => pass.set_vertex_buffer(*slot, None::<wgpu::BufferSlice<'_>>),
                Some(buffer) => {
                    let b = self.buffer(*buffer)?;
                    pass.set_vertex_buffer(*slot, b.slice(range(b, *offset, *size)?));
                }
            },
            E::SetIndexBuffer {
                buffer,
                format,
                offset,
                size,
            } => {
                let b = self.buffer(*buffer)?;
                pass.set_index_buffer(b.slice(range(b, *offset, *size)?), *format);
            }
            E::SetViewport(v) => {
                // wgpu-core's range checks let NaN through to the driver.
                finite(v, "viewport")?;
                let [x, y, w, h, min, max] = *v;
                pass.set_viewport(x, y, w, h, min, max)
            }
            E::SetScissorRect([x, y, w, h]) => pass.set_scissor_rect(*x, *y, *w, *h),
            E::SetBlendConstant([r, g, b, a]) => pass.set_blend_constant(wgpu::Color {
                r: *r,
                g: *g,
                b: *b,
                a: *a,
            }),
            E::SetStencilReference(v) => pass.set_stencil_reference(*v),
            E::Draw {
                vertices,
                instances,
            } => pass.draw(ordered(*vertices)?, ordered(*instances)?),
            E::DrawIndexed {
                indices,
                base_vertex,
                instances,
            } => pass.draw_indexed(ordered(*indices)?, *base_vertex, ordered(*instances)?),
            E::DrawIndirect { buffer, offset } => {
                pass.draw_indirect(self.buffer(*buffer)?, *offset)
            }
            E::DrawIndexedIndirect { buffer, offset } => {
                pass.draw_indexed_indirect(self.buffer(*buffer)?, *offset)
            }
            E::PushDebugGroup(s) => pass.push_debug_group(s),
            E::PopDebugGroup => pass.pop_debug_group(),
            E::InsertDebugMarker(s) => pass.insert_debug_marker(s),
            other => {
                return Err(validation(format!(
                    "{other:?} is not valid inside a render pass"
                )))
            }
        }
        Ok(())
    }
}

/// Floats that wgpu-core compares with `<`/`>` only, where NaN would pass to the driver.
fn finite(v: &[f32], what: &str) -> Result<(), GpuError> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(validation(format!(
            "{what} values must be finite, got {v:?}"
        )))
    }
}

fn load_op<V>(l: Load<V>) -> wgpu::LoadOp<V> {
    match l {
        Load::Clear(v) => wgpu::LoadOp::Clear(v),
        Load::Load => wgpu::LoadOp::Load,
    }
}

fn store_op(store: bool) -> wgpu::StoreOp {
    if store {
        wgpu::StoreOp::Store
    } else {
        wgpu::StoreOp::Discard
    }
}

/// A draw range; the `wgpu` front end subtracts its ends, so start > end is refused here.
fn ordered((start, end): (u32, u32)) -> Result<std::ops::Range<u32>, GpuError> {
    if start > end {
        return Err(validation(format!(
            "draw range {start}..{end} starts after it ends"
        )));
    }
    Ok(start..end)
}

/// The byte range of a vertex or index buffer binding; the `wgpu` front end panics on a
/// range outside the buffer or an empty one, so those are refused here.
fn range(
    b: &wgpu::Buffer,
    offset: u64,
    size: Option<u64>,
) -> Result<std::ops::Range<u64>, GpuError> {
    let end = match size {
        Some(s) => offset.checked_add(s),
        None => Some(b.size()),
    };
    match end {
        Some(end) if offset < end && end <= b.size() => Ok(offset..end),
        _ => Err(validation(format!(
            "buffer binding {offset}+{size:?} is empty or outside the buffer of {} bytes",
            b.size()
        ))),
    }
}
