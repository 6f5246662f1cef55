//! The virtio-gpu device driven through real virtqueues over guest memory, rendered by real
//! wgpu: every test runs once on Vulkan and once on GL. A missing adapter fails the test with
//! the NoAdapter text (which says what to install); nothing is skipped.

mod virtio_gpu_harness;

use virtio_gpu_harness::{backend, Guest, PAGE};
use vm_device::gpu_manager::GpuMode;
use vm_device::gpu_virt::virtio_gpu::edid::preferred_mode;
use vm_device::gpu_virt::virtio_gpu::protocol::{ctrl, EDID_RESP_SIZE};
use vm_device::gpu_virt::virtio_gpu::{
    Command, CtrlHeader, ErrorCode, Format, MemEntry, QueueKind, Rect, RgbaImage, VirtioGpuConfig,
};
use vm_device::gpu_virt::{GpuBackend, WgpuBackend, WgpuError};

fn pattern(x: u32, y: u32) -> [u8; 4] {
    [
        (x * 7 + y) as u8,
        (y * 3 + x / 5) as u8,
        (x ^ y) as u8,
        (x + 2 * y) as u8,
    ]
}

fn assert_image(img: &RgbaImage, w: u32, h: u32, expect: impl Fn(u32, u32) -> [u8; 4]) {
    assert_eq!((img.width, img.height), (w, h), "screenshot size");
    let mut bad = 0;
    for y in 0..h {
        for x in 0..w {
            let got = img.pixel(x, y).unwrap();
            let want = expect(x, y);
            if got != want {
                if bad < 5 {
                    eprintln!("pixel ({x},{y}): got {got:?}, want {want:?}");
                }
                bad += 1;
            }
        }
    }
    assert_eq!(bad, 0, "{bad} pixels differ");
}

fn config(modes: &[(u32, u32)]) -> VirtioGpuConfig {
    VirtioGpuConfig {
        scanouts: modes.to_vec(),
        ..Default::default()
    }
}

fn console_bringup(b: wgpu::Backends) {
    let be = backend(b);
    let mut g = Guest::new(&be, config(&[(640, 480)]));
    // GET_DISPLAY_INFO.
    let r = g.cmd_hdr(&Command::GetDisplayInfo, CtrlHeader::default());
    assert_eq!(r.len(), 24 + 16 * 24);
    assert_eq!(
        u32::from_le_bytes(r[0..4].try_into().unwrap()),
        ctrl::RESP_OK_DISPLAY_INFO
    );
    let word = |i: usize| u32::from_le_bytes(r[24 + 4 * i..28 + 4 * i].try_into().unwrap());
    assert_eq!(
        (word(0), word(1), word(2), word(3), word(4)),
        (0, 0, 640, 480, 1)
    );
    assert_eq!(word(6 + 4), 0, "scanout 1 is not connected");
    // GET_EDID.
    let r = g.cmd_hdr(&Command::GetEdid { scanout: 0 }, CtrlHeader::default());
    assert_eq!(r.len(), EDID_RESP_SIZE);
    assert_eq!(
        u32::from_le_bytes(r[0..4].try_into().unwrap()),
        ctrl::RESP_OK_EDID
    );
    assert_eq!(u32::from_le_bytes(r[24..28].try_into().unwrap()), 128);
    let edid = &r[32..160];
    assert_eq!(&edid[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    assert_eq!(
        edid.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
        0,
        "EDID checksum"
    );
    assert_eq!(preferred_mode(edid), Some((640, 480)));
    // The console's framebuffer: B8G8R8X8 over 300 shuffled pages.
    let (w, h) = (640, 480);
    let buf = g.resource(1, Format::B8G8R8X8, w, h);
    assert_eq!(buf.pages.len() as u64, (w * h * 4) as u64 / PAGE);
    g.paint(1, &buf, w, h, pattern);
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, w, h),
        scanout_id: 0,
        resource_id: 1,
    });
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, w, h),
        resource_id: 1,
    });
    let img = g.dev.screenshot(0).unwrap();
    assert_image(&img, w, h, |x, y| Format::B8G8R8X8.to_rgba(pattern(x, y)));
    // The PNG holds the same pixels.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scanout0.png");
    img.save_png(&path).unwrap();
    let mut reader =
        png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
            .read_info()
            .unwrap();
    let mut px = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut px).unwrap();
    assert_eq!(
        (info.width, info.height, info.color_type),
        (w, h, png::ColorType::Rgba)
    );
    assert_eq!(&px[..info.buffer_size()], &img.data[..]);
    let s = g.dev.stats();
    assert_eq!(s.bytes_to_host, (w * h * 4) as u64);
    assert_eq!(s.frames_presented, 1);
    assert_eq!(s.resources_alive, 1);
    assert_eq!(s.resource_bytes, (w * h * 4) as u64);
    assert_eq!(s.command("RESOURCE_FLUSH"), 1);
    assert_eq!(s.total_errors(), 0);
    // Backend view and reset: counters go, state stays.
    let bs = be.get_stats();
    assert_eq!(bs.devices_alive, 1);
    assert_eq!(bs.totals.frames_presented, 1);
    assert!(GpuBackend::get_stats(&be).get("frames_presented") == Some(1));
    be.reset_stats();
    let s = g.dev.stats();
    assert_eq!(
        (s.frames_presented, s.bytes_to_host, s.total_commands()),
        (0, 0, 0)
    );
    assert_eq!(s.resources_alive, 1, "reset keeps state");
    assert_eq!(g.dev.screenshot(0).unwrap(), img, "reset keeps the picture");
    // Teardown.
    g.ok(&Command::ResourceDetachBacking { resource_id: 1 });
    g.ok(&Command::ResourceUnref { resource_id: 1 });
    assert_eq!(g.dev.stats().resources_alive, 0);
    assert_eq!(g.dev.hostmem_used(), 0);
    assert!(g.dev.screenshot(0).is_err(), "unref disables the scanout");
}

fn partial_rects(b: wgpu::Backends) {
    let be = backend(b);
    let mut g = Guest::new(&be, config(&[(200, 120)]));
    let (w, h) = (200, 120);
    let buf = g.resource(5, Format::B8G8R8A8, w, h);
    g.paint(5, &buf, w, h, |_, _| [10, 20, 30, 255]);
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, w, h),
        scanout_id: 0,
        resource_id: 5,
    });
    // Change the whole guest framebuffer, but transfer and flush only a rectangle.
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[x as u8, y as u8, 99, 255]);
        }
    }
    g.write(&buf, 0, &data);
    let r = Rect::new(37, 11, 50, 70);
    let offset = (r.y * w * 4 + r.x * 4) as u64;
    g.ok(&Command::TransferToHost2d {
        rect: r,
        offset,
        resource_id: 5,
    });
    g.ok(&Command::ResourceFlush {
        rect: r,
        resource_id: 5,
    });
    let inside = |x: u32, y: u32| x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height;
    let img = g.dev.screenshot(0).unwrap();
    assert_image(&img, w, h, |x, y| {
        if inside(x, y) {
            [99, y as u8, x as u8, 255]
        } else {
            [30, 20, 10, 255]
        }
    });
    assert_eq!(
        g.dev.stats().bytes_to_host,
        (w * h * 4 + r.width * r.height * 4) as u64
    );
    // A flush of another rectangle shows nothing new: the transfer is what updates.
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, 10, 10),
        resource_id: 5,
    });
    assert_eq!(g.dev.screenshot(0).unwrap(), img);
    // Scanout showing a sub-rectangle of the resource (panning).
    g.ok(&Command::SetScanout {
        rect: Rect::new(30, 10, 64, 48),
        scanout_id: 0,
        resource_id: 5,
    });
    let img2 = g.dev.screenshot(0).unwrap();
    assert_image(&img2, 64, 48, |x, y| img.pixel(x + 30, y + 10).unwrap());
}

fn every_format(b: wgpu::Backends) {
    let be = backend(b);
    let mut g = Guest::new(&be, config(&[(64, 32)]));
    for (i, f) in Format::ALL.into_iter().enumerate() {
        let id = 10 + i as u32;
        let buf = g.resource(id, f, 64, 32);
        g.paint(id, &buf, 64, 32, pattern);
        g.ok(&Command::SetScanout {
            rect: Rect::new(0, 0, 64, 32),
            scanout_id: 0,
            resource_id: id,
        });
        g.ok(&Command::ResourceFlush {
            rect: Rect::new(0, 0, 64, 32),
            resource_id: id,
        });
        let img = g.dev.screenshot(0).unwrap();
        eprintln!("format {f:?}");
        assert_image(&img, 64, 32, |x, y| f.to_rgba(pattern(x, y)));
    }
}

fn cursor_on_top(b: wgpu::Backends) {
    let be = backend(b);
    let mut g = Guest::new(&be, config(&[(320, 200)]));
    let buf = g.resource(1, Format::B8G8R8X8, 320, 200);
    g.paint(1, &buf, 320, 200, |_, _| [0, 0, 200, 0]); // red, padding byte 0
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, 320, 200),
        scanout_id: 0,
        resource_id: 1,
    });
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, 320, 200),
        resource_id: 1,
    });
    // 64×64 ARGB cursor: left half opaque green, right half fully transparent.
    let cbuf = g.resource(2, Format::B8G8R8A8, 64, 64);
    g.paint(2, &cbuf, 64, 64, |x, _| {
        if x < 32 {
            [0, 255, 0, 255]
        } else {
            [255, 255, 255, 0]
        }
    });
    // The cursor image is read after fenced control commands, as the Linux driver does.
    assert_eq!(
        g.fenced(&Command::TransferToHost2d {
            rect: Rect::new(0, 0, 64, 64),
            offset: 0,
            resource_id: 2
        }),
        ctrl::RESP_OK_NODATA
    );
    g.ok(&Command::UpdateCursor {
        pos: Guest::cursor_pos(0, 100, 50),
        resource_id: 2,
        hot_x: 4,
        hot_y: 2,
    });
    let red = [200, 0, 0, 255];
    let green = [0, 255, 0, 255];
    let in_cursor = |x: u32, y: u32, cx: u32, cy: u32| {
        x >= cx - 4 && x < cx - 4 + 32 && y >= cy - 2 && y < cy - 2 + 64
    };
    let img = g.dev.screenshot(0).unwrap();
    assert_image(&img, 320, 200, |x, y| {
        if in_cursor(x, y, 100, 50) {
            green
        } else {
            red
        }
    });
    g.ok(&Command::MoveCursor {
        pos: Guest::cursor_pos(0, 250, 150),
    });
    let img = g.dev.screenshot(0).unwrap();
    assert_image(&img, 320, 200, |x, y| {
        if in_cursor(x, y, 250, 150) {
            green
        } else {
            red
        }
    });
    // A flush under the cursor keeps it on top.
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, 320, 200),
        resource_id: 1,
    });
    assert_eq!(g.dev.screenshot(0).unwrap(), img);
    // Hide.
    g.ok(&Command::UpdateCursor {
        pos: Guest::cursor_pos(0, 0, 0),
        resource_id: 0,
        hot_x: 0,
        hot_y: 0,
    });
    assert_image(&g.dev.screenshot(0).unwrap(), 320, 200, |_, _| red);
    // New content while no cursor is shown (direct scanout), then the cursor again: the
    // composition catches up with everything.
    g.paint(1, &buf, 320, 200, |_, _| [200, 0, 0, 0]); // blue
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, 320, 200),
        resource_id: 1,
    });
    let blue = [0, 0, 200, 255];
    assert_image(&g.dev.screenshot(0).unwrap(), 320, 200, |_, _| blue);
    g.ok(&Command::UpdateCursor {
        pos: Guest::cursor_pos(0, 10, 10),
        resource_id: 2,
        hot_x: 4,
        hot_y: 2,
    });
    assert_image(&g.dev.screenshot(0).unwrap(), 320, 200, |x, y| {
        if in_cursor(x, y, 10, 10) {
            green
        } else {
            blue
        }
    });
    // Cursor commands on the control queue (and vice versa) are refused.
    let req = Command::MoveCursor {
        pos: Guest::cursor_pos(0, 1, 1),
    }
    .encode(CtrlHeader::default());
    let r = g.raw(QueueKind::Control, &req, 24);
    assert_eq!(
        u32::from_le_bytes(r[0..4].try_into().unwrap()),
        ctrl::RESP_ERR_UNSPEC
    );
}

fn multiple_scanouts(b: wgpu::Backends) {
    let be = backend(b);
    let mut g = Guest::new(&be, config(&[(128, 64), (96, 48)]));
    let b1 = g.resource(1, Format::R8G8B8X8, 128, 64);
    g.paint(1, &b1, 128, 64, pattern);
    let b2 = g.resource(2, Format::X8R8G8B8, 96, 48);
    g.paint(2, &b2, 96, 48, |x, y| pattern(y, x));
    for (sid, rid, w, h) in [(0, 1, 128, 64), (1, 2, 96, 48)] {
        g.ok(&Command::SetScanout {
            rect: Rect::new(0, 0, w, h),
            scanout_id: sid,
            resource_id: rid,
        });
        g.ok(&Command::ResourceFlush {
            rect: Rect::new(0, 0, w, h),
            resource_id: rid,
        });
    }
    assert_image(&g.dev.screenshot(0).unwrap(), 128, 64, |x, y| {
        Format::R8G8B8X8.to_rgba(pattern(x, y))
    });
    assert_image(&g.dev.screenshot(1).unwrap(), 96, 48, |x, y| {
        Format::X8R8G8B8.to_rgba(pattern(y, x))
    });
    // Mirror: resource 1 on scanout 1 too (a 96×48 window of it); one flush updates both.
    g.ok(&Command::SetScanout {
        rect: Rect::new(16, 8, 96, 48),
        scanout_id: 1,
        resource_id: 1,
    });
    let frames = g.dev.stats().frames_presented;
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, 128, 64),
        resource_id: 1,
    });
    assert_eq!(g.dev.stats().frames_presented, frames + 2);
    assert_image(&g.dev.screenshot(1).unwrap(), 96, 48, |x, y| {
        Format::R8G8B8X8.to_rgba(pattern(x + 16, y + 8))
    });
    // Disable scanout 1.
    g.ok(&Command::SetScanout {
        rect: Rect::default(),
        scanout_id: 1,
        resource_id: 0,
    });
    assert!(g.dev.screenshot(1).is_err());
    assert!(g.dev.screenshot(0).is_ok());
}

fn fences(b: wgpu::Backends) {
    let be = backend(b);
    let mut g = Guest::new(&be, config(&[(64, 64)]));
    let buf = g.alloc_buffer(64 * 64 * 4);
    let entries = g.entries(&buf);
    for cmd in [
        Command::GetDisplayInfo,
        Command::ResourceCreate2d {
            resource_id: 3,
            format: 2,
            width: 64,
            height: 64,
        },
        Command::ResourceAttachBacking {
            resource_id: 3,
            entries,
        },
        Command::TransferToHost2d {
            rect: Rect::new(0, 0, 64, 64),
            offset: 0,
            resource_id: 3,
        },
        Command::SetScanout {
            rect: Rect::new(0, 0, 64, 64),
            scanout_id: 0,
            resource_id: 3,
        },
        Command::ResourceFlush {
            rect: Rect::new(0, 0, 64, 64),
            resource_id: 3,
        },
    ] {
        let t = g.fenced(&cmd);
        assert!(
            t == ctrl::RESP_OK_NODATA || t == ctrl::RESP_OK_DISPLAY_INFO,
            "{t:#x}"
        );
    }
    // Errors are fenced too.
    assert_eq!(
        g.fenced(&Command::ResourceUnref { resource_id: 99 }),
        ctrl::RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(g.dev.stats().fences, 7);
    // Unfenced responses carry no fence.
    let r = g.cmd_hdr(
        &Command::GetDisplayInfo,
        CtrlHeader {
            fence_id: 5,
            ..Default::default()
        },
    );
    let h = CtrlHeader::decode(&r).unwrap();
    assert_eq!((h.flags, h.fence_id), (0, 0));
}

fn error_responses(b: wgpu::Backends) {
    use ErrorCode::*;
    let be = backend(b);
    let mut g = Guest::new(&be, config(&[(64, 64)]));
    let buf = g.resource(1, Format::B8G8R8X8, 64, 64);
    let e = |c: ErrorCode| c.wire();
    let cases: Vec<(Command, ErrorCode)> = vec![
        (
            Command::ResourceCreate2d {
                resource_id: 0,
                format: 2,
                width: 4,
                height: 4,
            },
            InvalidResourceId,
        ),
        (
            Command::ResourceCreate2d {
                resource_id: 1,
                format: 2,
                width: 4,
                height: 4,
            },
            InvalidResourceId,
        ),
        (
            Command::ResourceCreate2d {
                resource_id: 2,
                format: 5,
                width: 4,
                height: 4,
            },
            InvalidParameter,
        ),
        (
            Command::ResourceCreate2d {
                resource_id: 2,
                format: 2,
                width: 0,
                height: 4,
            },
            InvalidParameter,
        ),
        (
            Command::ResourceCreate2d {
                resource_id: 2,
                format: 2,
                width: u32::MAX,
                height: u32::MAX,
            },
            InvalidParameter,
        ),
        (
            Command::ResourceCreate2d {
                resource_id: 2,
                format: 2,
                width: 8192,
                height: 8192,
            },
            OutOfMemory,
        ),
        (
            Command::ResourceUnref { resource_id: 77 },
            InvalidResourceId,
        ),
        (
            Command::ResourceDetachBacking { resource_id: 77 },
            InvalidResourceId,
        ),
        (
            Command::ResourceAttachBacking {
                resource_id: 77,
                entries: vec![MemEntry {
                    addr: 0x40_0000,
                    length: 4096,
                }],
            },
            InvalidResourceId,
        ),
        // Already attached.
        (
            Command::ResourceAttachBacking {
                resource_id: 1,
                entries: vec![MemEntry {
                    addr: 0x40_0000,
                    length: 4096,
                }],
            },
            Unspec,
        ),
        (
            Command::SetScanout {
                rect: Rect::new(0, 0, 64, 64),
                scanout_id: 1,
                resource_id: 1,
            },
            InvalidScanoutId,
        ),
        (
            Command::SetScanout {
                rect: Rect::new(0, 0, 64, 64),
                scanout_id: u32::MAX,
                resource_id: 1,
            },
            InvalidScanoutId,
        ),
        (
            Command::SetScanout {
                rect: Rect::new(0, 0, 64, 64),
                scanout_id: 0,
                resource_id: 9,
            },
            InvalidResourceId,
        ),
        (
            Command::SetScanout {
                rect: Rect::new(1, 0, 64, 64),
                scanout_id: 0,
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (
            Command::SetScanout {
                rect: Rect::new(u32::MAX, 0, 2, 64),
                scanout_id: 0,
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (
            Command::SetScanout {
                rect: Rect::new(0, 0, 0, 0),
                scanout_id: 0,
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (
            Command::ResourceFlush {
                rect: Rect::new(0, 0, 65, 1),
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (
            Command::ResourceFlush {
                rect: Rect::new(0, 0, 1, 1),
                resource_id: 9,
            },
            InvalidResourceId,
        ),
        (
            Command::TransferToHost2d {
                rect: Rect::new(0, 0, 64, 64),
                offset: 0,
                resource_id: 9,
            },
            InvalidResourceId,
        ),
        (
            Command::TransferToHost2d {
                rect: Rect::new(60, 0, 8, 1),
                offset: 0,
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (
            Command::TransferToHost2d {
                rect: Rect::new(0, 0, 64, 64),
                offset: 4,
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (
            Command::TransferToHost2d {
                rect: Rect::new(0, 0, 1, 1),
                offset: u64::MAX - 1,
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (
            Command::TransferToHost2d {
                rect: Rect::new(0, 63, 64, 1),
                offset: 64 * 63 * 4 + 1,
                resource_id: 1,
            },
            InvalidParameter,
        ),
        (Command::GetEdid { scanout: 1 }, InvalidScanoutId),
        (
            Command::UpdateCursor {
                pos: Guest::cursor_pos(3, 0, 0),
                resource_id: 1,
                hot_x: 0,
                hot_y: 0,
            },
            InvalidScanoutId,
        ),
        (
            Command::UpdateCursor {
                pos: Guest::cursor_pos(0, 0, 0),
                resource_id: 9,
                hot_x: 0,
                hot_y: 0,
            },
            InvalidResourceId,
        ),
        (
            Command::UpdateCursor {
                pos: Guest::cursor_pos(0, 0, 0),
                resource_id: 1,
                hot_x: 64,
                hot_y: 0,
            },
            InvalidParameter,
        ),
        (
            Command::MoveCursor {
                pos: Guest::cursor_pos(16, 0, 0),
            },
            InvalidScanoutId,
        ),
    ];
    for (cmd, want) in &cases {
        let got = g.cmd(cmd);
        assert_eq!(got, e(*want), "{cmd:?}: got {got:#x}, want {want}");
    }
    // Backings: outside guest memory (and straddling its end), empty, zero-length entry,
    // address overflow.
    g.ok(&Command::ResourceCreate2d {
        resource_id: 2,
        format: 2,
        width: 4,
        height: 4,
    });
    for (entries, want) in [
        (
            vec![MemEntry {
                addr: 0x7000_0000,
                length: 4096,
            }],
            Unspec,
        ),
        (
            vec![MemEntry {
                addr: virtio_gpu_harness::LOW_SIZE - 16,
                length: 64,
            }],
            Unspec,
        ),
        (vec![], InvalidParameter),
        (
            vec![MemEntry {
                addr: 0x40_0000,
                length: 0,
            }],
            InvalidParameter,
        ),
        (
            vec![MemEntry {
                addr: u64::MAX - 8,
                length: 64,
            }],
            InvalidParameter,
        ),
    ] {
        let cmd = Command::ResourceAttachBacking {
            resource_id: 2,
            entries,
        };
        assert_eq!(g.cmd(&cmd), e(want), "{cmd:?}");
    }
    // Transfer without a backing; detach without a backing.
    assert_eq!(
        g.cmd(&Command::TransferToHost2d {
            rect: Rect::new(0, 0, 4, 4),
            offset: 0,
            resource_id: 2
        }),
        e(Unspec)
    );
    assert_eq!(
        g.cmd(&Command::ResourceDetachBacking { resource_id: 2 }),
        e(Unspec)
    );
    // A backing in the high region (64-bit addresses) works.
    g.ok(&Command::ResourceAttachBacking {
        resource_id: 2,
        entries: vec![MemEntry {
            addr: virtio_gpu_harness::HIGH_BASE + 8192,
            length: 64,
        }],
    });
    g.ok(&Command::TransferToHost2d {
        rect: Rect::new(0, 0, 4, 4),
        offset: 0,
        resource_id: 2,
    });
    // Malformed requests: unknown type, 3D commands, truncated body, short header.
    for (req, want) in [
        (vec![0u8; 10], ErrorCode::Unspec),
        (
            Command::GetDisplayInfo.encode(CtrlHeader {
                type_: 0x999,
                ..Default::default()
            }),
            Unspec,
        ),
        (
            CtrlHeader {
                type_: 0x200,
                ..Default::default()
            }
            .encode_vec(),
            Unspec,
        ),
        (
            CtrlHeader {
                type_: ctrl::RESOURCE_CREATE_2D,
                ..Default::default()
            }
            .encode_vec(),
            Unspec,
        ),
    ] {
        let r = g.raw(QueueKind::Control, &req, 24);
        assert_eq!(r.len(), 24, "error response is a bare header");
        assert_eq!(u32::from_le_bytes(r[0..4].try_into().unwrap()), e(want));
    }
    // Attach with a huge entry count but a short body.
    let mut req = CtrlHeader {
        type_: ctrl::RESOURCE_ATTACH_BACKING,
        ..Default::default()
    }
    .encode_vec();
    req.extend_from_slice(&2u32.to_le_bytes());
    req.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        u32::from_le_bytes(
            g.raw(QueueKind::Control, &req, 24)[0..4]
                .try_into()
                .unwrap()
        ),
        e(Unspec)
    );
    // A response buffer too small for DISPLAY_INFO gets an ERR_UNSPEC header.
    let r = g.raw(
        QueueKind::Control,
        &Command::GetDisplayInfo.encode(CtrlHeader::default()),
        24,
    );
    assert_eq!(u32::from_le_bytes(r[0..4].try_into().unwrap()), e(Unspec));
    // No response buffer at all: the chain is still completed, with 0 bytes written.
    let r = g.raw(
        QueueKind::Control,
        &Command::GetDisplayInfo.encode(CtrlHeader::default()),
        0,
    );
    assert!(r.is_empty());
    // The device is still usable and nothing leaked.
    g.paint(1, &buf, 64, 64, pattern);
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, 64, 64),
        scanout_id: 0,
        resource_id: 1,
    });
    g.ok(&Command::ResourceFlush {
        rect: Rect::new(0, 0, 64, 64),
        resource_id: 1,
    });
    assert_image(&g.dev.screenshot(0).unwrap(), 64, 64, |x, y| {
        Format::B8G8R8X8.to_rgba(pattern(x, y))
    });
    let s = g.dev.stats();
    // cases + 5 bad backings + 2 missing-backing + 4 malformed + 1 huge attach + 1 short
    // response buffer (the chain with no response buffer got no response at all).
    assert_eq!(s.total_errors() as usize, cases.len() + 5 + 2 + 4 + 1 + 1);
    assert_eq!(s.error(ErrorCode::InvalidScanoutId), 5);
    assert_eq!(g.dev.resource_count(), 2);
    assert_eq!(be.get_stats().wgpu_errors, 0, "no wgpu validation errors");
    // Features: EDID only, never VIRGL (bit 0) or RESOURCE_BLOB (bit 3); GET_EDID needs
    // the driver to have accepted it.
    assert_eq!(g.dev.device_features(), 1 << 1);
    g.dev.set_driver_features(0);
    assert_eq!(g.cmd(&Command::GetEdid { scanout: 0 }), e(Unspec));
    g.dev.set_driver_features(u64::MAX);
    assert_eq!(g.cmd(&Command::GetEdid { scanout: 0 }), ctrl::RESP_OK_EDID);
    assert_eq!(
        u32::from_le_bytes(g.dev.config_space()[8..12].try_into().unwrap()),
        1
    );
}

fn budget(b: wgpu::Backends) {
    let be = backend(b);
    let mut g = Guest::new(
        &be,
        VirtioGpuConfig {
            scanouts: vec![(64, 64)],
            max_hostmem: 1 << 20,
            ..Default::default()
        },
    );
    // 256×256×4 = 256 KiB each: four fit, the fifth does not.
    for id in 1..=4 {
        g.ok(&Command::ResourceCreate2d {
            resource_id: id,
            format: 2,
            width: 256,
            height: 256,
        });
    }
    assert_eq!(
        g.cmd(&Command::ResourceCreate2d {
            resource_id: 5,
            format: 2,
            width: 256,
            height: 256
        }),
        ErrorCode::OutOfMemory.wire()
    );
    // Tiny resources are charged a page each.
    assert_eq!(
        g.cmd(&Command::ResourceCreate2d {
            resource_id: 6,
            format: 2,
            width: 1,
            height: 1
        }),
        ErrorCode::OutOfMemory.wire()
    );
    assert_eq!(g.dev.hostmem_used(), 1 << 20);
    g.ok(&Command::ResourceUnref { resource_id: 2 });
    g.ok(&Command::ResourceCreate2d {
        resource_id: 5,
        format: 2,
        width: 256,
        height: 256,
    });
    assert_eq!(g.dev.hostmem_used(), 1 << 20);
    assert_eq!(g.dev.stats().error(ErrorCode::OutOfMemory), 2);
    // A second device on the same backend has its own budget, ids and stats.
    let mut g2 = Guest::new(
        &be,
        VirtioGpuConfig {
            max_hostmem: 1 << 20,
            ..config(&[(64, 64)])
        },
    );
    g2.ok(&Command::ResourceCreate2d {
        resource_id: 1,
        format: 2,
        width: 256,
        height: 256,
    });
    assert_eq!(g2.dev.stats().resources_alive, 1);
    let totals = be.get_stats();
    assert_eq!(totals.devices_alive, 2);
    assert_eq!(totals.totals.resources_alive, 5);
    drop(g2);
    assert_eq!(be.get_stats().devices_alive, 1);
}

fn no_adapter_error() {
    // Metal does not exist on Linux: the error must say what was tried and what to install.
    let mut b = WgpuBackend::with_backends(wgpu::Backends::METAL);
    let e = b.init().unwrap_err();
    assert!(matches!(e, WgpuError::NoAdapter { .. }));
    let t = e.to_string();
    for needle in ["METAL", "vulkaninfo", "mesa-vulkan-drivers", "NVIDIA"] {
        assert!(t.contains(needle), "{needle} missing from: {t}");
    }
    let be = GpuBackend::init(&mut b).unwrap_err();
    assert_eq!(be.mode, GpuMode::Wgpu);
    assert!(b.adapter_info().is_none());
    assert!(matches!(
        b.create_device(VirtioGpuConfig::default()),
        Err(WgpuError::NotInitialized)
    ));
}

/// `CtrlHeader::encode` into a fresh Vec.
trait EncodeVec {
    fn encode_vec(&self) -> Vec<u8>;
}
impl EncodeVec for CtrlHeader {
    fn encode_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

#[test]
fn missing_backend_fails_with_remedy() {
    no_adapter_error();
}

macro_rules! on_backend {
    ($name:ident, $backends:expr) => {
        mod $name {
            const B: wgpu::Backends = $backends;
            #[test]
            fn console_bringup() {
                super::console_bringup(B)
            }
            #[test]
            fn partial_rects() {
                super::partial_rects(B)
            }
            #[test]
            fn every_format() {
                super::every_format(B)
            }
            #[test]
            fn cursor_on_top() {
                super::cursor_on_top(B)
            }
            #[test]
            fn multiple_scanouts() {
                super::multiple_scanouts(B)
            }
            #[test]
            fn fences() {
                super::fences(B)
            }
            #[test]
            fn error_responses() {
                super::error_responses(B)
            }
            #[test]
            fn budget() {
                super::budget(B)
            }
        }
    };
}

on_backend!(vulkan, wgpu::Backends::VULKAN);
on_backend!(gl, wgpu::Backends::GL);
