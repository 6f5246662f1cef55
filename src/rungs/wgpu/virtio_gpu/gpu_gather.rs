//! TRANSFER_TO_HOST_2D done by the GPU: the guest's pages, imported in place
//! ([`crate::rungs::wgpu::host_import`]), are read by a fragment shader that writes the
//! rectangle straight into the resource texture. No CPU copy at all.
//!
//! Per resource, a page table (one `u32` per 4 KiB of backing: where that page starts, in
//! 32-bit words from the start of a window of the imported guest region) lives in a storage
//! buffer next to the window, both bound once. The shader maps each pixel to its backing byte
//! (`offset + y·stride + x·4`, as the CPU path reads it), looks its page up and converts the
//! guest's byte order to the texture's exactly as the CPU path does (8-bit unorm round-trips
//! are exact).
//!
//! A backing qualifies when it lies in one guest memory region that could be imported, every
//! entry is 4-byte aligned and all but the last are whole 4 KiB pages (a Linux guest's
//! scatter lists are), and its window fits one storage binding. Anything else, and transfers with an unaligned offset, take the CPU path.

use vm_memory::{
    GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
};
use wgpu::util::DeviceExt;

use super::protocol::{HostLayout, Rect};
use super::resources::{Backing, Resource};
use super::scanout::{draw_layout, pipelines, uniform_entry};
use crate::rungs::wgpu::GpuContext;

/// Bytes per page-table entry's page.
const PAGE: u64 = 4096;

const SHADER: &str = r#"
struct Params {
    // Texture pixel of the rectangle's top-left corner.
    origin: vec2<u32>,
    // Backing bytes per row, and the backing offset of the top-left pixel.
    stride: u32,
    offset: u32,
    // Byte order: 0 B,G,R,A into BGRA; 1 R,G,B,A into RGBA; 2 A,R,G,B reversed into BGRA;
    // 3 A,B,G,R reversed into RGBA.
    mode: u32,
};
@group(0) @binding(0) var<storage, read> guest: array<u32>;
@group(0) @binding(1) var<storage, read> pages: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@vertex
fn vs(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    // One triangle covering the viewport (the rectangle).
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return vec4<f32>(uv * 2.0 - 1.0, 0.0, 1.0);
}

@fragment
fn fs(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let xy = vec2<u32>(pos.xy) - p.origin;
    let b = p.offset + xy.y * p.stride + xy.x * 4u;
    let c = unpack4x8unorm(guest[pages[b >> 12u] + ((b & 4095u) >> 2u)]);
    switch p.mode {
        case 0u: { return c.zyxw; }
        case 1u: { return c; }
        case 2u: { return c.yzwx; }
        default: { return c.wzyx; }
    }
}
"#;

/// Size of the uniform block.
const PARAMS_SIZE: u64 = 32;

/// The shader's pipelines (one set per wgpu device, shared by every VM's device).
#[derive(Debug)]
pub struct GatherPipelines {
    layout: wgpu::BindGroupLayout,
    bgra: wgpu::RenderPipeline,
    rgba: wgpu::RenderPipeline,
}

impl GatherPipelines {
    /// Builds the pipelines.
    pub fn new(device: &wgpu::Device) -> GatherPipelines {
        let storage = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: true },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let (module, layout, pl) = draw_layout(
            device,
            "virtio-gpu gather",
            SHADER,
            &[
                storage(0),
                storage(1),
                uniform_entry(2, wgpu::ShaderStages::FRAGMENT, PARAMS_SIZE),
            ],
        );
        let (bgra, rgba) = pipelines(
            device,
            "virtio-gpu gather",
            (&pl, &module),
            wgpu::PrimitiveTopology::TriangleList,
            None,
        );
        GatherPipelines { layout, bgra, rgba }
    }
}

/// One virtio-gpu device's side of the gather: its uniform block and the guest memory it
/// imported.
#[derive(Debug)]
pub struct Gatherer {
    params: wgpu::Buffer,
    /// Guest regions imported so far: (host address, length, buffer).
    imports: Vec<(usize, u64, wgpu::Buffer)>,
}

/// A resource's bound window and page table.
#[derive(Debug)]
pub struct GatherBinding {
    bind: wgpu::BindGroup,
}

impl Gatherer {
    /// A gatherer with nothing imported yet.
    pub fn new(device: &wgpu::Device) -> Gatherer {
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("virtio-gpu gather"),
            size: PARAMS_SIZE,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Gatherer {
            params,
            imports: Vec::new(),
        }
    }

    /// Drops every import (the guest memory map is about to change). The caller has waited
    /// for the GPU work that read them.
    pub fn forget_imports(&mut self) {
        for (_, _, b) in self.imports.drain(..) {
            b.destroy();
        }
    }

    /// The window and page table of `backing`, or `None` when it does not qualify (see the
    /// module documentation).
    ///
    /// # Safety
    ///
    /// The guest memory regions of `mem` must stay mapped until `GpuGather::forget_imports`
    /// is called (the device's [`super::VirtioGpuDevice::forget_guest_memory`]).
    pub unsafe fn bind<M: GuestMemory>(
        &mut self,
        ctx: &GpuContext,
        backing: &Backing,
        mem: &M,
    ) -> Option<GatherBinding> {
        let (device, import) = (&ctx.device, ctx.host_import.as_ref()?);
        let segs = backing.segments();
        // Every entry but the last a whole number of pages (so each page of the backing
        // lies in one entry), all of them 4-byte aligned.
        let (last, whole) = segs.split_last()?;
        if backing.len() > u32::MAX as u64
            || whole.iter().any(|&(a, l)| a % 4 != 0 || l % PAGE != 0)
            || last.0 % 4 != 0
            || last.1 % 4 != 0
        {
            return None;
        }
        // Guest physical memory only (behind an IOMMU the pages could move).
        let (region, _) = mem
            .physical_memory()?
            .to_region_addr(GuestAddress(segs.first()?.0))?;
        let start = region.start_addr().0;
        if start % 4 != 0 {
            return None;
        }
        let region_len = region.len();
        let mut lo = u64::MAX;
        let mut hi = 0u64;
        for &(a, l) in segs {
            let off = a.checked_sub(start)?;
            if off.checked_add(l)? > region_len {
                return None;
            }
            lo = lo.min(off);
            hi = hi.max(off + l);
        }
        let host = region.get_host_address(MemoryRegionAddress(0)).ok()? as usize;
        let limits = device.limits();
        let base = lo - lo % limits.min_storage_buffer_offset_alignment as u64;
        let size = hi - base;
        if size > limits.max_storage_buffer_binding_size || (size - 1) / 4 > u32::MAX as u64 {
            return None;
        }
        let buffer = match self
            .imports
            .iter()
            .find(|i| i.0 == host && i.1 == region_len)
        {
            Some(i) => i.2.clone(),
            None => {
                let len = region_len - region_len % import.min_alignment;
                if hi > len {
                    return None;
                }
                // SAFETY: the region is mapped host memory for as long as the caller
                // guarantees; alignment is checked by `import`.
                match unsafe { import.import(device, host as *mut u8, len) } {
                    Ok(b) => {
                        self.imports.push((host, region_len, b.clone()));
                        b
                    }
                    Err(e) => {
                        eprintln!("vm-device: guest memory stays on the CPU path: {e}");
                        return None;
                    }
                }
            }
        };
        let mut table = Vec::with_capacity((backing.len() / PAGE) as usize);
        for &(a, l) in segs {
            let first = (a - start - base) / 4;
            table.extend((0..l.div_ceil(PAGE)).map(|k| (first + k * (PAGE / 4)) as u32));
        }
        let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
        let pages = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("virtio-gpu gather pages"),
            contents: &bytes,
            usage: wgpu::BufferUsages::STORAGE,
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("virtio-gpu gather"),
            layout: &ctx.gather_pipelines().layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: base,
                        size: wgpu::BufferSize::new(size),
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: pages.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: self.params.as_entire_binding(),
                },
            ],
        });
        Some(GatherBinding { bind })
    }

    /// Records the gather of `rect` (its top-left pixel at backing byte `offset`, 4-byte
    /// aligned) into a resource's texture, through its view. The uniform block is written
    /// through the queue, so the recorded work must be submitted before the next call.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        binding: &GatherBinding,
        (res, view): (&Resource, &wgpu::TextureView),
        rect: &Rect,
        offset: u64,
    ) {
        let (mode, bgra) = match res.format.host_layout() {
            HostLayout::Bgra => (0u32, true),
            HostLayout::Rgba => (1, false),
            HostLayout::BgraFromArgb => (2, true),
            HostLayout::RgbaFromAbgr => (3, false),
        };
        let mut b = [0u8; PARAMS_SIZE as usize];
        for (i, v) in [rect.x, rect.y, res.width * 4, offset as u32, mode]
            .iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        ctx.queue.write_buffer(&self.params, 0, &b);
        let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("virtio-gpu gather"),
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
        let pipes = ctx.gather_pipelines();
        pass.set_pipeline(if bgra { &pipes.bgra } else { &pipes.rgba });
        pass.set_bind_group(0, &binding.bind, &[]);
        pass.set_viewport(
            rect.x as f32,
            rect.y as f32,
            rect.width as f32,
            rect.height as f32,
            0.0,
            1.0,
        );
        pass.set_scissor_rect(rect.x, rect.y, rect.width, rect.height);
        pass.draw(0..3, 0..1);
    }
}
