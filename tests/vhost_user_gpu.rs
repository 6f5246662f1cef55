//! The vhost-user-gpu backend's display side: the device records what QEMU's display must
//! see (mode changes, flushed areas), and `forward_display` sends it as QEMU's
//! vhost-user-gpu messages (SCANOUT, UPDATE with x8r8g8b8 pixels of the flushed rectangle
//! only) on the display socket; the test reads that socket as QEMU would. The whole path
//! with QEMU is `cargo xtask e2e`.

mod virtio_gpu_harness;

use std::io::Read;
use std::os::unix::net::UnixStream;

use vhost::vhost_user::GpuBackend;
use vhost_user_backend::VhostUserBackend;
use virtio_gpu_harness::{backend, Guest, GuestBuffer};
use vm_device::gpu_virt::vhost_user::{forward_display, VhostUserGpu};
use vm_device::gpu_virt::virtio_gpu::{Command, DisplayEvent, Format, Rect, VirtioGpuConfig};

const SCANOUT: u32 = 7;
const UPDATE: u32 = 8;

/// One message as QEMU reads it: header {request, flags, size}, then `size` bytes.
fn read_msg(s: &mut UnixStream) -> (u32, Vec<u8>) {
    let mut hdr = [0u8; 12];
    s.read_exact(&mut hdr).unwrap();
    let word = |i: usize| u32::from_le_bytes(hdr[i * 4..i * 4 + 4].try_into().unwrap());
    let mut body = vec![0u8; word(2) as usize];
    s.read_exact(&mut body).unwrap();
    (word(0), body)
}

fn words(b: &[u8], n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap()))
        .collect()
}

/// B8G8R8X8 memory bytes of the test picture.
fn pixel(x: u32, y: u32) -> [u8; 4] {
    [(x * 7) as u8, (y * 3) as u8, (x ^ y) as u8, 0]
}

fn config(w: u32, h: u32) -> VirtioGpuConfig {
    VirtioGpuConfig {
        scanouts: vec![(w, h)],
        ..VirtioGpuConfig::default()
    }
}

/// Creates resource `id` painted with [`pixel`] and shows it on scanout 0.
fn show(g: &mut Guest, id: u32, format: Format, (w, h): (u32, u32)) -> GuestBuffer {
    let buf = g.resource(id, format, w, h);
    g.paint(id, &buf, w, h, pixel);
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, w, h),
        scanout_id: 0,
        resource_id: id,
    });
    buf
}

fn display_round_trip(b: wgpu::Backends) {
    let be = backend(b);
    let (w, h) = (64, 48);
    let mut g = Guest::new(&be, config(w, h));
    g.dev.record_display_events(true);
    let buf = show(&mut g, 1, Format::B8G8R8X8, (w, h));
    assert_eq!(
        g.dev.take_display_events(),
        vec![
            DisplayEvent::Mode {
                scanout: 0,
                width: w,
                height: h
            },
            DisplayEvent::Damage {
                scanout: 0,
                rect: Rect::new(0, 0, w, h)
            }
        ]
    );
    assert!(
        g.dev.take_display_events().is_empty(),
        "events are taken once"
    );

    let (a, mut qemu) = UnixStream::pair().unwrap();
    let display = GpuBackend::from_stream(a);
    // The whole picture once, after SET_SCANOUT.
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, w, h),
        scanout_id: 0,
        resource_id: 1,
    });
    assert_eq!(forward_display(&mut g.dev, &display).unwrap(), 2);
    let (req, body) = read_msg(&mut qemu);
    assert_eq!((req, words(&body, 3)), (SCANOUT, vec![0, w, h]));
    let (req, body) = read_msg(&mut qemu);
    assert_eq!(req, UPDATE);
    assert_eq!(words(&body, 5), vec![0, 0, 0, w, h]);
    let px = &body[20..];
    assert_eq!(px.len(), (w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let o = ((y * w + x) * 4) as usize;
            let p = pixel(x, y);
            assert_eq!(&px[o..o + 3], &p[..3], "pixel ({x},{y})");
        }
    }
    // A guest change and two flushes: one UPDATE with their bounding box, new pixels.
    let new = |x: u32, y: u32| {
        if (10..20).contains(&x) && (5..9).contains(&y) {
            [1, 2, 3, 0]
        } else {
            pixel(x, y)
        }
    };
    g.paint(1, &buf, w, h, new);
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(10, 5, 4, 4),
        resource_id: 1,
    });
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(16, 5, 4, 4),
        resource_id: 1,
    });
    assert_eq!(forward_display(&mut g.dev, &display).unwrap(), 1);
    let (req, body) = read_msg(&mut qemu);
    assert_eq!(req, UPDATE);
    assert_eq!(
        words(&body, 5),
        vec![0, 10, 5, 10, 4],
        "only the flushed area"
    );
    assert_eq!(body.len(), 20 + 10 * 4 * 4);
    assert!(body[20..].chunks_exact(4).all(|p| p[..3] == [1, 2, 3]));
    // Nothing new: nothing sent.
    assert_eq!(forward_display(&mut g.dev, &display).unwrap(), 0);
    // Unref disables the scanout: SCANOUT 0x0.
    g.ok(&Command::ResourceDetachBacking { resource_id: 1 });
    g.ok(&Command::ResourceUnref { resource_id: 1 });
    assert_eq!(forward_display(&mut g.dev, &display).unwrap(), 1);
    let (req, body) = read_msg(&mut qemu);
    assert_eq!((req, words(&body, 3)), (SCANOUT, vec![0, 0, 0]));
    // An R, G, B, X resource (an RGBA texture, read back through the same reused buffer):
    // UPDATE still carries B, G, R, X.
    show(&mut g, 2, Format::R8G8B8X8, (w, h));
    assert_eq!(forward_display(&mut g.dev, &display).unwrap(), 2);
    let _ = read_msg(&mut qemu);
    let (req, body) = read_msg(&mut qemu);
    assert_eq!(req, UPDATE);
    let px = &body[20..];
    for y in 0..h {
        for x in 0..w {
            let o = ((y * w + x) * 4) as usize;
            let p = pixel(x, y);
            assert_eq!(&px[o..o + 3], &[p[2], p[1], p[0]], "pixel ({x},{y})");
        }
    }
}

fn backend_surface(b: wgpu::Backends) {
    let be = backend(b);
    let dev = be.create_device(config(1280, 800)).unwrap();
    let gpu = VhostUserGpu::new(dev);
    let f = gpu.features();
    for bit in [1u64, 28, 29, 30, 32, 40] {
        assert!(f & (1 << bit) != 0, "feature bit {bit} offered");
    }
    assert_eq!(f & 1, 0, "never VIRGL");
    assert_eq!(f & (1 << 3), 0, "never RESOURCE_BLOB");
    assert_eq!(gpu.num_queues(), 2);
    // num_scanouts at offset 8 of the config space; reads past it are zeros.
    assert_eq!(gpu.get_config(8, 4), 1u32.to_le_bytes());
    assert_eq!(gpu.get_config(0, 24).len(), 24);
    assert_eq!(gpu.get_config(100, 4), vec![0; 4]);
    // A kick for a queue the device does not have is an error, not a panic.
    let err = gpu
        .handle_event(5, vmm_sys_util::epoll::EventSet::IN, &[], 0)
        .unwrap_err();
    assert!(err.to_string().contains("queue 5"), "{err}");
    // Serving a socket path that cannot exist fails with the path in the message.
    let e = gpu
        .serve(std::path::Path::new("/nonexistent-dir/gpu.sock"))
        .unwrap_err();
    assert!(e.contains("/nonexistent-dir/gpu.sock"), "{e}");
}

mod vulkan {
    const B: wgpu::Backends = wgpu::Backends::VULKAN;
    #[test]
    fn display_round_trip() {
        super::display_round_trip(B)
    }
    #[test]
    fn backend_surface() {
        super::backend_surface(B)
    }
}
