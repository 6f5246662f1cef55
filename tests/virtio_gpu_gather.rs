//! The GPU gather (TRANSFER_TO_HOST_2D drawn by a shader from guest pages imported in place)
//! against the CPU path, pixel for pixel: every format, whole and partial transfers with
//! offsets, backings that qualify and one that does not. Vulkan (lavapipe on CI offers
//! VK_EXT_external_memory_host).

#[path = "virtio_gpu_harness/mod.rs"]
mod harness;

use harness::{backend, Guest};
use vm_device::gpu_virt::virtio_gpu::{
    Command, Format, GpuGather, MemEntry, Rect, RgbaImage, VirtioGpuConfig,
};
use vm_device::gpu_virt::WgpuBackend;

fn config(w: u32, h: u32, gpu_gather: GpuGather) -> VirtioGpuConfig {
    VirtioGpuConfig {
        scanouts: vec![(w, h)],
        gpu_gather,
        ..Default::default()
    }
}

fn pattern(seed: u32) -> impl Fn(u32, u32) -> [u8; 4] {
    move |x, y| {
        let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ seed).to_le_bytes();
        [v[0], v[1] ^ v[3], v[2], v[3]]
    }
}

/// Runs the same guest work on a device with `gather` and returns the screenshot and the
/// number of GPU-gathered transfers.
fn run(be: &WgpuBackend, gather: GpuGather, format: Format, split_first: bool) -> (RgbaImage, u64) {
    let (w, h) = (61u32, 37u32);
    let mut g = Guest::new(be, config(w, h, gather));
    g.ok(&Command::ResourceCreate2d {
        resource_id: 1,
        format: format.wire(),
        width: w,
        height: h,
    });
    let buf = g.alloc_buffer(w as u64 * h as u64 * 4);
    let mut entries = g.entries(&buf);
    if split_first {
        // A first entry of 100 bytes: the backing's pages no longer line up with entries,
        // so it does not qualify for the GPU gather.
        let e = entries[0];
        entries.splice(
            0..1,
            [
                MemEntry {
                    addr: e.addr,
                    length: 100,
                },
                MemEntry {
                    addr: e.addr + 100,
                    length: e.length - 100,
                },
            ],
        );
    }
    g.ok(&Command::ResourceAttachBacking {
        resource_id: 1,
        entries,
    });
    g.paint(1, &buf, w, h, pattern(1));
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, w, h),
        scanout_id: 0,
        resource_id: 1,
    });
    // New content, then partial transfers at their offsets (one a single pixel, one a
    // single column, one the last row).
    let mut data = Vec::new();
    let p2 = pattern(2);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&p2(x, y));
        }
    }
    g.write(&buf, 0, &data);
    for r in [
        Rect::new(3, 5, 20, 9),
        Rect::new(60, 0, 1, 37),
        Rect::new(0, 36, 61, 1),
        Rect::new(30, 20, 1, 1),
    ] {
        g.ok(&Command::TransferToHost2d {
            rect: r,
            offset: (r.y as u64 * w as u64 + r.x as u64) * 4,
            resource_id: 1,
        });
    }
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, w, h),
        resource_id: 1,
    });
    let shot = g.dev.screenshot(0).unwrap();
    assert_eq!(g.dev.stats().total_errors(), 0);
    (shot, g.dev.gpu_gathered_transfers())
}

#[test]
fn gpu_gather_matches_the_cpu_path_for_every_format() {
    let be = backend(wgpu::Backends::VULKAN);
    for format in Format::ALL {
        let (cpu, n) = run(&be, GpuGather::Never, format, false);
        assert_eq!(n, 0, "{format:?}: Never gathers nothing on the GPU");
        let (gpu, n) = run(&be, GpuGather::Always, format, false);
        assert_eq!(n, 5, "{format:?}: every transfer gathered by the GPU");
        assert_eq!(gpu.width, cpu.width);
        let bad = gpu
            .data
            .chunks_exact(4)
            .zip(cpu.data.chunks_exact(4))
            .position(|(a, b)| a != b);
        assert_eq!(bad, None, "{format:?}: first differing pixel index");
    }
}

#[test]
fn a_backing_that_does_not_qualify_takes_the_cpu_path() {
    let be = backend(wgpu::Backends::VULKAN);
    let (cpu, _) = run(&be, GpuGather::Never, Format::B8G8R8X8, true);
    let (gpu, n) = run(&be, GpuGather::Always, Format::B8G8R8X8, true);
    assert_eq!(n, 0, "split pages: no GPU gather");
    assert_eq!(gpu, cpu);
}

/// After `forget_guest_memory` (what the vhost-user backend calls before QEMU's memory map
/// changes) the next transfer imports the memory again and still gathers on the GPU.
#[test]
fn forgetting_guest_memory_imports_it_again() {
    let be = backend(wgpu::Backends::VULKAN);
    let (w, h) = (64u32, 32u32);
    let mut g = Guest::new(&be, config(w, h, GpuGather::Always));
    let buf = g.resource(1, Format::B8G8R8X8, w, h);
    g.paint(1, &buf, w, h, pattern(3));
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, w, h),
        scanout_id: 0,
        resource_id: 1,
    });
    assert_eq!(g.dev.gpu_gathered_transfers(), 1);
    g.dev.forget_guest_memory();
    g.paint(1, &buf, w, h, pattern(4));
    assert_eq!(g.dev.gpu_gathered_transfers(), 2);
    let shot = g.dev.screenshot(0).unwrap();
    let p = pattern(4);
    for (i, px) in shot.data.chunks_exact(4).enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        let b = p(x, y);
        // B, G, R, X in memory: RGBA screenshot, alpha forced opaque.
        assert_eq!(px, [b[2], b[1], b[0], 255], "pixel ({x},{y})");
    }
}
