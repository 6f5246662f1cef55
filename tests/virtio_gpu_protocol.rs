//! The virtio-gpu wire format, EDID and bookkeeping helpers, without a GPU.

use proptest::prelude::*;
use vm_device::gpu_virt::virtio_gpu::edid::{build_edid, preferred_mode};
use vm_device::gpu_virt::virtio_gpu::protocol::{
    ctrl, decode_request, DecodeError, Response, DISPLAY_INFO_RESP_SIZE, EDID_RESP_SIZE,
    MAX_BACKING_ENTRIES,
};
use vm_device::gpu_virt::virtio_gpu::resources::charged_bytes;
use vm_device::gpu_virt::virtio_gpu::{
    is_ok, response_type, Command, CtrlHeader, CursorPos, ErrorCode, Format, MemEntry,
    NullRenderer, QueueKind, Rect, VirtioGpuConfig, VirtioGpuDevice,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[test]
fn edid_is_valid_for_many_modes() {
    for (w, h) in [
        (640, 480),
        (1024, 768),
        (1920, 1080),
        (2560, 1600),
        (3840, 2160),
        (4095, 4095),
        (1, 1),
        (1366, 768),
    ] {
        let e = build_edid(w, h, 42);
        assert_eq!(&e[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(
            e.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0,
            "{w}x{h} checksum"
        );
        assert_eq!((e[18], e[19]), (1, 4), "EDID 1.4");
        assert_eq!(preferred_mode(&e), Some((w, h)));
        let clock = u16::from_le_bytes([e[54], e[55]]);
        assert!(clock > 0, "{w}x{h}: pixel clock");
        // Monitor name descriptor.
        assert_eq!(&e[72..77], &[0, 0, 0, 0xfc, 0]);
        assert_eq!(&e[77..86], b"vm-device");
    }
    // Out-of-range sizes are clamped, never wrapped.
    assert_eq!(preferred_mode(&build_edid(100_000, 0, 1)), Some((4095, 1)));
}

#[test]
fn every_command_round_trips() {
    let cmds = vec![
        Command::GetDisplayInfo,
        Command::GetEdid { scanout: 3 },
        Command::ResourceCreate2d {
            resource_id: 9,
            format: 134,
            width: 800,
            height: 600,
        },
        Command::ResourceUnref { resource_id: 9 },
        Command::SetScanout {
            rect: Rect::new(1, 2, 3, 4),
            scanout_id: 1,
            resource_id: 9,
        },
        Command::ResourceFlush {
            rect: Rect::new(5, 6, 7, 8),
            resource_id: 9,
        },
        Command::TransferToHost2d {
            rect: Rect::new(0, 0, 8, 8),
            offset: 0x1_0000_0004,
            resource_id: 9,
        },
        Command::ResourceAttachBacking {
            resource_id: 9,
            entries: vec![
                MemEntry {
                    addr: 0x1_2345_6000,
                    length: 4096,
                },
                MemEntry {
                    addr: 0x1000,
                    length: 12,
                },
            ],
        },
        Command::ResourceDetachBacking { resource_id: 9 },
        Command::UpdateCursor {
            pos: CursorPos {
                scanout_id: 0,
                x: 10,
                y: 20,
            },
            resource_id: 9,
            hot_x: 1,
            hot_y: 2,
        },
        Command::MoveCursor {
            pos: CursorPos {
                scanout_id: 1,
                x: 30,
                y: 40,
            },
        },
    ];
    for c in cmds {
        let hdr = CtrlHeader {
            flags: 1,
            fence_id: 77,
            ctx_id: 5,
            ..Default::default()
        };
        let bytes = c.encode(hdr);
        let (h, d) = decode_request(&bytes).unwrap();
        assert_eq!(d, c);
        assert_eq!(
            (h.type_, h.flags, h.fence_id, h.ctx_id),
            (c.wire_type(), 1, 77, 5)
        );
        // Every strict prefix is rejected without panicking.
        for cut in 0..bytes.len() {
            assert!(decode_request(&bytes[..cut]).is_err(), "{c:?} cut at {cut}");
        }
    }
}

#[test]
fn attach_backing_entry_count_is_capped() {
    let mut b = Vec::new();
    CtrlHeader {
        type_: ctrl::RESOURCE_ATTACH_BACKING,
        ..Default::default()
    }
    .encode(&mut b);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(MAX_BACKING_ENTRIES + 1).to_le_bytes());
    assert!(matches!(
        decode_request(&b),
        Err((Some(_), DecodeError::TooManyEntries { .. }))
    ));
}

#[test]
fn responses_have_the_spec_sizes_and_echo_fences() {
    let req = CtrlHeader {
        flags: 1,
        fence_id: 0xdead_beef,
        ctx_id: 3,
        ..Default::default()
    };
    let r = Response::OkDisplayInfo(vec![]).encode(Some(&req));
    assert_eq!(r.len(), DISPLAY_INFO_RESP_SIZE);
    assert_eq!(r.len(), 408);
    let r = Response::OkEdid(build_edid(800, 600, 1).to_vec()).encode(Some(&req));
    assert_eq!(r.len(), EDID_RESP_SIZE);
    let h = CtrlHeader::decode(&r).unwrap();
    assert_eq!(
        (h.type_, h.flags, h.fence_id, h.ctx_id),
        (ctrl::RESP_OK_EDID, 1, 0xdead_beef, 3)
    );
    for e in ErrorCode::ALL {
        let r = Response::Err(e).encode(None);
        assert_eq!(r.len(), 24);
        assert_eq!(
            ErrorCode::from_wire(CtrlHeader::decode(&r).unwrap().type_),
            Some(e)
        );
    }
}

#[test]
fn formats_cover_the_spec() {
    let wires: Vec<u32> = Format::ALL.iter().map(|f| f.wire()).collect();
    assert_eq!(wires, vec![1, 2, 3, 4, 67, 68, 121, 134]);
    for f in Format::ALL {
        assert_eq!(Format::from_wire(f.wire()), Some(f));
    }
    assert_eq!(Format::from_wire(0), None);
    // Memory byte order [b0, b1, b2, b3] → RGBA.
    let p = [1, 2, 3, 4];
    assert_eq!(Format::B8G8R8A8.to_rgba(p), [3, 2, 1, 4]);
    assert_eq!(Format::B8G8R8X8.to_rgba(p), [3, 2, 1, 255]);
    assert_eq!(Format::A8R8G8B8.to_rgba(p), [2, 3, 4, 1]);
    assert_eq!(Format::X8R8G8B8.to_rgba(p), [2, 3, 4, 255]);
    assert_eq!(Format::R8G8B8A8.to_rgba(p), [1, 2, 3, 4]);
    assert_eq!(Format::X8B8G8R8.to_rgba(p), [4, 3, 2, 255]);
    assert_eq!(Format::A8B8G8R8.to_rgba(p), [4, 3, 2, 1]);
    assert_eq!(Format::R8G8B8X8.to_rgba(p), [1, 2, 3, 255]);
}

#[test]
fn budget_charges_whole_pages_and_never_overflows() {
    assert_eq!(charged_bytes(1, 1), Some(4096));
    assert_eq!(charged_bytes(1024, 1), Some(4096));
    assert_eq!(charged_bytes(1025, 1), Some(8192));
    assert_eq!(charged_bytes(1920, 1080), Some(1920 * 1080 * 4));
    assert_eq!(charged_bytes(65536, 65536), Some(1 << 34));
    assert_eq!(
        charged_bytes(u32::MAX, u32::MAX),
        None,
        "overflow is reported, not wrapped"
    );
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_request(&bytes);
    }

    #[test]
    fn rect_intersection_is_inside_both(
        a in (0u32..100, 0u32..100, 0u32..100, 0u32..100),
        b in (0u32..100, 0u32..100, 0u32..100, 0u32..100),
    ) {
        let (a, b) = (Rect::new(a.0, a.1, a.2, a.3), Rect::new(b.0, b.1, b.2, b.3));
        if let Some(i) = a.intersect(&b) {
            prop_assert!(!i.is_empty());
            prop_assert!(i.x >= a.x && i.x + i.width <= a.x + a.width);
            prop_assert!(i.y >= b.y && i.y + i.height <= b.y + b.height);
        }
        let u = a.union(&b);
        if !a.is_empty() {
            prop_assert_eq!(u.intersect(&a), Some(a));
        }
    }
}

/// A device on the null renderer (no adapter) serves a whole 2D session: the protocol state
/// is kept as on the wgpu renderer, and readbacks are zeros (alpha 255 on an opaque format).
#[test]
fn null_renderer_serves_the_2d_protocol_without_an_adapter() {
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    mem.write_slice(&[0xab; 64 * 48 * 4], GuestAddress(0x1_0000))
        .unwrap();
    let mut dev = VirtioGpuDevice::with_renderer(
        NullRenderer::new(),
        VirtioGpuConfig {
            scanouts: vec![(64, 48)],
            ..VirtioGpuConfig::default()
        },
    )
    .unwrap();
    let send = |dev: &mut VirtioGpuDevice<NullRenderer>, q: QueueKind, c: Command| {
        let resp = dev.process_request(q, &c.encode(CtrlHeader::default()), &mem);
        response_type(&resp).unwrap()
    };
    let ok = |t: u32| assert!(is_ok(t), "response {t:#x}");
    let whole = Rect::new(0, 0, 64, 48);
    ok(send(
        &mut dev,
        QueueKind::Control,
        Command::ResourceCreate2d {
            resource_id: 1,
            format: Format::B8G8R8X8.wire(),
            width: 64,
            height: 48,
        },
    ));
    ok(send(
        &mut dev,
        QueueKind::Control,
        Command::ResourceAttachBacking {
            resource_id: 1,
            entries: vec![MemEntry {
                addr: 0x1_0000,
                length: 64 * 48 * 4,
            }],
        },
    ));
    ok(send(
        &mut dev,
        QueueKind::Control,
        Command::TransferToHost2d {
            rect: whole,
            offset: 0,
            resource_id: 1,
        },
    ));
    // Refused as on any renderer: outside the backing.
    let t = send(
        &mut dev,
        QueueKind::Control,
        Command::TransferToHost2d {
            rect: whole,
            offset: 4,
            resource_id: 1,
        },
    );
    assert_eq!(ErrorCode::from_wire(t), Some(ErrorCode::InvalidParameter));
    ok(send(
        &mut dev,
        QueueKind::Control,
        Command::SetScanout {
            rect: whole,
            scanout_id: 0,
            resource_id: 1,
        },
    ));
    ok(send(
        &mut dev,
        QueueKind::Control,
        Command::ResourceFlush {
            rect: whole,
            resource_id: 1,
        },
    ));
    ok(send(
        &mut dev,
        QueueKind::Cursor,
        Command::UpdateCursor {
            pos: CursorPos {
                scanout_id: 0,
                x: 5,
                y: 5,
            },
            resource_id: 1,
            hot_x: 0,
            hot_y: 0,
        },
    ));
    assert_eq!(dev.scanout_state(0), Some((1, whole)));
    assert_eq!(dev.stats().frames_presented, 1);
    assert_eq!(dev.stats().bytes_to_host, 64 * 48 * 4);
    assert_eq!(dev.resource_count(), 1);
    let img = dev.screenshot(0).unwrap();
    assert_eq!((img.width, img.height), (64, 48));
    assert!(img.data.chunks(4).all(|p| p == [0, 0, 0, 255]));
    let bgrx = dev.read_scanout_bgrx(0, Rect::new(1, 2, 3, 4)).unwrap();
    assert_eq!(bgrx, vec![0; 3 * 4 * 4]);
    assert!(dev.read_scanout_bgrx(0, Rect::new(60, 0, 8, 1)).is_err());
    ok(send(
        &mut dev,
        QueueKind::Control,
        Command::ResourceUnref { resource_id: 1 },
    ));
    assert_eq!(dev.scanout_state(0), None);
    assert!(dev.screenshot(0).is_err());
    assert_eq!(dev.hostmem_used(), 0);
}

/// The null renderer has no adapter to run WebGPU on: such a configuration is refused,
/// and so are scanout modes beyond its resource limit.
#[test]
fn null_renderer_refuses_what_it_cannot_serve() {
    let webgpu = VirtioGpuDevice::with_renderer(
        NullRenderer::new(),
        VirtioGpuConfig {
            webgpu: Some(Default::default()),
            ..VirtioGpuConfig::default()
        },
    );
    assert!(webgpu.is_err());
    let big = VirtioGpuDevice::with_renderer(
        NullRenderer::with_max_texture_dim(512),
        VirtioGpuConfig {
            scanouts: vec![(1024, 768)],
            ..VirtioGpuConfig::default()
        },
    );
    assert!(big.is_err());
}
