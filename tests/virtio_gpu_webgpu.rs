//! WebGPU over the virtio-gpu 3D command set, on a real adapter (lavapipe in CI), driven
//! through the virtqueue harness as a guest kernel drives it: the capset, contexts, 3D
//! buffer resources in guest pages, SUBMIT_3D carrying wire requests and replies written
//! in place; the guest library (`webgpu-guest`) on top of it; hostile command streams.

mod virtio_gpu_harness;

use proptest::prelude::*;
use virtio_gpu_harness::webgpu::*;
use virtio_gpu_harness::Guest;
use vm_device::gpu_virt::virtio_gpu::protocol::{ctrl, HDR_SIZE};
use vm_device::gpu_virt::virtio_gpu::webgpu::{
    cmd, CAPSET_INFO_RESP_SIZE, MAX_PENDING_VM, OP_APPEND, OP_CALL, REPLY_HEADER, STATUS_OK,
    SUBMIT_MAGIC, WEBGPU_CAPSET_ID,
};
use vm_device::gpu_virt::virtio_gpu::{Command, Format, QueueKind};
use webgpu_guest::kit;
use webgpu_wire::{Transport, TransportError};

const ADD: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> c: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&c) { c[id.x] = a[id.x] * 3u + 7u; }
}
"#;

fn vector_add(instance: &wgpu::Instance, n: u32) -> Vec<u32> {
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let a: Vec<u8> = (0..n)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let ba = kit::buffer(
        &device,
        n as u64 * 4,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
    );
    let bc = kit::buffer(
        &device,
        n as u64 * 4,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    queue.write_buffer(&ba, 0, &a);
    let mut enc = device.create_command_encoder(&Default::default());
    kit::encode_compute(&device, &mut enc, ADD, &[&ba, &bc], [n.div_ceil(64), 1, 1]);
    queue.submit([enc.finish()]);
    kit::bytes_u32(&kit::read_buffer(&device, &queue, &bc).expect("read back"))
}

#[test]
fn a_2d_only_device_offers_no_3d() {
    let be = be();
    let mut g = Guest::new(&be, config(false));
    assert_eq!(g.dev.device_features() & 1, 0, "no VIRGL");
    assert_eq!(g.dev.config_space()[12..16], [0; 4], "no capsets");
    for t in [cmd::GET_CAPSET_INFO, cmd::CTX_CREATE, cmd::SUBMIT_3D] {
        assert_eq!(
            send(&mut g, &req(t, 1, &[0; 96]), 64).0,
            ctrl::RESP_ERR_UNSPEC,
            "{t:#x}"
        );
    }
}

#[test]
fn the_capset_carries_the_protocol_version_and_the_adapters_limits() {
    let be = be();
    let mut g = Guest::new(&be, config(true));
    assert_eq!(g.dev.device_features() & 1, 1, "VIRGL offered");
    assert_eq!(
        g.dev.config_space()[12..16],
        1u32.to_le_bytes(),
        "one capset"
    );
    let (t, r) = send(
        &mut g,
        &req(cmd::GET_CAPSET_INFO, 0, &words(&[0, 0])),
        CAPSET_INFO_RESP_SIZE,
    );
    assert_eq!(t, cmd::RESP_OK_CAPSET_INFO);
    let w = |i: usize| {
        u32::from_le_bytes(
            r[HDR_SIZE + 4 * i..HDR_SIZE + 4 * i + 4]
                .try_into()
                .unwrap(),
        )
    };
    assert_eq!(
        (w(0), w(1)),
        (WEBGPU_CAPSET_ID, webgpu_wire::PROTOCOL_VERSION as u32)
    );
    let size = w(2) as usize;
    assert_eq!(
        send(
            &mut g,
            &req(cmd::GET_CAPSET_INFO, 0, &words(&[1, 0])),
            CAPSET_INFO_RESP_SIZE
        )
        .0,
        ctrl::RESP_ERR_INVALID_PARAMETER,
        "only one capset"
    );
    let (t, r) = send(
        &mut g,
        &req(cmd::GET_CAPSET, 0, &words(&[WEBGPU_CAPSET_ID, 1])),
        HDR_SIZE + size,
    );
    assert_eq!(t, cmd::RESP_OK_CAPSET);
    let mut rd = webgpu_wire::Reader::new(&r[HDR_SIZE..]);
    assert_eq!(rd.u32().unwrap(), webgpu_wire::PROTOCOL_VERSION as u32);
    let limits = webgpu_wire::decode_limits(&mut rd).unwrap();
    let adapter = be.context().unwrap().adapter.limits();
    assert_eq!(limits.max_buffer_size, adapter.max_buffer_size);
    assert_eq!(
        limits.max_storage_buffer_binding_size,
        adapter.max_storage_buffer_binding_size
    );
    assert_eq!(
        (rd.u64().unwrap(), rd.u64().unwrap()),
        (0, 0),
        "no optional features"
    );
    rd.finish().unwrap();
    for (id, ver) in [(WEBGPU_CAPSET_ID, 2), (1, 1), (0, 0)] {
        assert_eq!(
            status(&mut g, &req(cmd::GET_CAPSET, 0, &words(&[id, ver]))),
            ctrl::RESP_ERR_INVALID_PARAMETER,
            "capset {id} v{ver}"
        );
    }
}

#[test]
fn wgpu_vector_add_through_the_device_equals_the_cpu() {
    let be = be();
    let g = Guest::new(&be, config(true));
    // 4 KiB parts: the 256 KiB write_buffer travels in APPEND frames.
    let t = DeviceTransport::new(g, 1 << 20, 4096);
    let instance = webgpu_guest::instance(Box::new(t));
    let n = 65_536;
    let got = vector_add(&instance, n);
    let want: Vec<u32> = (0..n)
        .map(|i| {
            i.wrapping_mul(2_654_435_761)
                .wrapping_mul(3)
                .wrapping_add(7)
        })
        .collect();
    assert!(
        got == want,
        "vector add through the device differs from the CPU"
    );
}

#[test]
fn a_reply_larger_than_the_reply_area_is_held_and_fetched() {
    let be = be();
    let g = Guest::new(&be, config(true));
    // 64 bytes: the adapter description and the 256 KiB readback do not fit.
    let t = DeviceTransport::new(g, 64, 1 << 20);
    let t = std::sync::Arc::new(t);
    struct Shared(std::sync::Arc<DeviceTransport>);
    impl std::fmt::Debug for Shared {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Shared")
        }
    }
    impl Transport for Shared {
        fn call(&self, r: Vec<u8>) -> Result<Vec<u8>, TransportError> {
            self.0.call(r)
        }
    }
    let instance = webgpu_guest::instance(Box::new(Shared(t.clone())));
    let got = vector_add(&instance, 1024);
    assert_eq!(
        got[5],
        5u32.wrapping_mul(2_654_435_761)
            .wrapping_mul(3)
            .wrapping_add(7)
    );
    assert!(
        t.inner.lock().unwrap().fetches >= 1,
        "some reply went through FETCH"
    );
}

#[test]
fn contexts_resources_and_ids_are_checked() {
    let be = be();
    let mut g = Guest::new(&be, config(true));
    let ok = ctrl::RESP_OK_NODATA;
    assert_eq!(ctx_create(&mut g, 1, 0), ok);
    assert_eq!(
        ctx_create(&mut g, 1, 0),
        ctrl::RESP_ERR_INVALID_CONTEXT_ID,
        "duplicate"
    );
    assert_eq!(
        ctx_create(&mut g, 0, 0),
        ctrl::RESP_ERR_INVALID_CONTEXT_ID,
        "id 0"
    );
    assert_eq!(
        ctx_create(&mut g, 2, 1),
        ctrl::RESP_ERR_INVALID_PARAMETER,
        "virgl context"
    );
    assert_eq!(
        ctx_create(&mut g, 2, WEBGPU_CAPSET_ID),
        ok,
        "CONTEXT_INIT with our capset"
    );
    // 2D and 3D resources share one id space.
    g.ok(&Command::ResourceCreate2d {
        resource_id: 5,
        format: Format::B8G8R8X8.wire(),
        width: 4,
        height: 4,
    });
    assert_eq!(
        create_3d(&mut g, 5, 4096),
        ctrl::RESP_ERR_INVALID_RESOURCE_ID
    );
    // Linux attaches every GEM object a client opens to its context, the fbdev's 2D dumb
    // buffer included (seen in the e2e guest as ERR_INVALID_RESOURCE_ID for 0x202).
    for t in [cmd::CTX_ATTACH_RESOURCE, cmd::CTX_DETACH_RESOURCE] {
        assert_eq!(
            status(&mut g, &req(t, 1, &words(&[5, 0]))),
            ok,
            "{t:#x} of a 2D resource"
        );
        assert_eq!(
            status(&mut g, &req(t, 9, &words(&[5, 0]))),
            ctrl::RESP_ERR_INVALID_CONTEXT_ID,
            "{t:#x} without the context"
        );
    }
    let b10 = buffer(&mut g, 1, 10, 4096);
    assert_eq!(
        g.cmd(&Command::ResourceCreate2d {
            resource_id: 10,
            format: Format::B8G8R8X8.wire(),
            width: 4,
            height: 4
        }),
        ctrl::RESP_ERR_INVALID_RESOURCE_ID
    );
    // Only buffers.
    assert_eq!(
        status(
            &mut g,
            &req(
                cmd::RESOURCE_CREATE_3D,
                0,
                &words(&[11, 2, 1, 0, 4, 4, 1, 1, 0, 0, 0, 0])
            )
        ),
        ctrl::RESP_ERR_INVALID_PARAMETER
    );
    // Context 2 cannot use context 1's resource.
    assert_eq!(
        submit(&mut g, 2, OP_CALL, 10, 1, b"x"),
        ctrl::RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        status(
            &mut g,
            &req(
                cmd::TRANSFER_FROM_HOST_3D,
                2,
                &words(&[0, 0, 0, 16, 1, 1, 0, 0, 10, 0, 0, 0])
            )
        ),
        ctrl::RESP_ERR_INVALID_RESOURCE_ID
    );
    // Transfers inside the buffer are fine, outside are not.
    assert_eq!(
        status(
            &mut g,
            &req(
                cmd::TRANSFER_TO_HOST_3D,
                1,
                &words(&[0, 0, 0, 4096, 1, 1, 0, 0, 10, 0, 0, 0])
            )
        ),
        ok
    );
    assert_eq!(
        status(
            &mut g,
            &req(
                cmd::TRANSFER_TO_HOST_3D,
                1,
                &words(&[1, 0, 0, 4096, 1, 1, 0, 0, 10, 0, 0, 0])
            )
        ),
        ctrl::RESP_ERR_INVALID_PARAMETER
    );
    // A malformed request becomes a refusal in the reply area, not a host failure.
    assert_eq!(submit(&mut g, 1, OP_CALL, 10, 7, b"garbage"), ok);
    let (st, seq, len) = reply_header(&g, &b10);
    assert_eq!((st, seq), (STATUS_OK, 7));
    let reply = read(&g, &b10, REPLY_HEADER as u64, len as usize);
    let (r, _) = webgpu_wire::decode_reply(&reply).unwrap();
    assert!(matches!(r, webgpu_wire::Reply::Refused(_)), "{r:?}");
    // Bad frames.
    assert_eq!(
        submit(&mut g, 1, 9, 10, 1, b""),
        ctrl::RESP_ERR_INVALID_PARAMETER,
        "op"
    );
    let bad_magic = {
        let mut body = words(&[16, 0]);
        body.extend_from_slice(b"XXXX");
        body.extend_from_slice(&words(&[OP_CALL, 10, 1]));
        req(cmd::SUBMIT_3D, 1, &body)
    };
    assert_eq!(status(&mut g, &bad_magic), ctrl::RESP_ERR_INVALID_PARAMETER);
    let short = req(cmd::SUBMIT_3D, 1, &words(&[1000, 0, 1, 2]));
    assert_eq!(
        status(&mut g, &short),
        ctrl::RESP_ERR_INVALID_PARAMETER,
        "size past the body"
    );
    // Destroy: the context is gone, its resources stay until unref.
    assert_eq!(status(&mut g, &req(cmd::CTX_DESTROY, 1, &[])), ok);
    assert_eq!(
        status(&mut g, &req(cmd::CTX_DESTROY, 1, &[])),
        ctrl::RESP_ERR_INVALID_CONTEXT_ID
    );
    assert_eq!(
        submit(&mut g, 1, OP_CALL, 10, 1, b"x"),
        ctrl::RESP_ERR_INVALID_CONTEXT_ID
    );
    assert_eq!(g.dev.webgpu().unwrap().context_count(), 1);
    g.ok(&Command::ResourceDetachBacking { resource_id: 10 });
    g.ok(&Command::ResourceUnref { resource_id: 10 });
    assert_eq!(g.dev.webgpu().unwrap().resource_count(), 0);
    assert_eq!(
        g.cmd(&Command::ResourceUnref { resource_id: 10 }),
        ctrl::RESP_ERR_INVALID_RESOURCE_ID
    );
    // A new driver (feature negotiation) starts from nothing.
    g.dev.set_driver_features(g.dev.device_features());
    assert_eq!(g.dev.webgpu().unwrap().context_count(), 0);
}

#[test]
fn contexts_per_vm_are_capped() {
    let be = be();
    let mut g = Guest::new(&be, config(true));
    let max = vm_device::gpu_virt::virtio_gpu::webgpu::MAX_CONTEXTS as u32;
    for c in 1..=max {
        assert_eq!(ctx_create(&mut g, c, 0), ctrl::RESP_OK_NODATA);
    }
    assert_eq!(ctx_create(&mut g, max + 1, 0), ctrl::RESP_ERR_OUT_OF_MEMORY);
}

/// APPEND parts are bounded: one wire message per context, [`MAX_PENDING_VM`] per VM; a
/// context over either gets ERR_OUT_OF_MEMORY and its gathered bytes are dropped.
#[test]
fn gathered_request_bytes_are_bounded_per_context_and_per_vm() {
    let be = be();
    let mut g = Guest::new(&be, config(true));
    for c in 1..=2 {
        assert_eq!(ctx_create(&mut g, c, 0), ctrl::RESP_OK_NODATA);
    }
    let part = vec![0u8; 1 << 20];
    let append = |g: &mut Guest, ctx: u32| submit(g, ctx, OP_APPEND, 0, 1, &part);
    // Context 1: one wire message (64 MiB + header) fits, one more part does not.
    for _ in 0..64 {
        assert_eq!(append(&mut g, 1), ctrl::RESP_OK_NODATA);
    }
    assert_eq!(
        append(&mut g, 1),
        ctrl::RESP_ERR_OUT_OF_MEMORY,
        "over one message"
    );
    // Dropped: context 1 can gather again; with context 2 the VM's total is the limit.
    let vm_parts = MAX_PENDING_VM >> 20;
    for _ in 0..40 {
        assert_eq!(append(&mut g, 1), ctrl::RESP_OK_NODATA);
    }
    for _ in 40..vm_parts {
        assert_eq!(append(&mut g, 2), ctrl::RESP_OK_NODATA);
    }
    assert_eq!(
        append(&mut g, 2),
        ctrl::RESP_ERR_OUT_OF_MEMORY,
        "over the VM's total"
    );
}

const TYPES: [u32; 10] = [
    cmd::GET_CAPSET_INFO,
    cmd::GET_CAPSET,
    cmd::CTX_CREATE,
    cmd::CTX_DESTROY,
    cmd::CTX_ATTACH_RESOURCE,
    cmd::CTX_DETACH_RESOURCE,
    cmd::RESOURCE_CREATE_3D,
    cmd::TRANSFER_TO_HOST_3D,
    cmd::TRANSFER_FROM_HOST_3D,
    cmd::SUBMIT_3D,
];

/// Random 3D commands (random type, context, truncated or random bodies, small ids so they
/// collide with live ones) never panic and always get a header back; the device still
/// serves 2D afterwards.
#[test]
fn hostile_3d_command_streams_never_panic() {
    use proptest::test_runner::{Config, TestRunner};
    let be = be();
    let strategy = proptest::collection::vec(
        (
            0usize..TYPES.len(),
            0u32..4,
            proptest::collection::vec(0u32..24, 0..30),
            any::<bool>(),
        ),
        1..40,
    );
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&strategy, |cmds| {
            let mut g = Guest::new(&be, config(true));
            // Some live state for the random ids to hit.
            ctx_create(&mut g, 1, 0);
            let _ = buffer(&mut g, 1, 3, 8192);
            for (t, ctx, body, frame) in cmds {
                let mut bytes = words(&body);
                if frame && TYPES[t] == cmd::SUBMIT_3D {
                    let mut data = SUBMIT_MAGIC.to_vec();
                    data.extend_from_slice(&bytes);
                    bytes = words(&[data.len() as u32, 0]);
                    bytes.extend_from_slice(&data);
                }
                let resp = g.raw(QueueKind::Control, &req(TYPES[t], ctx, &bytes), 4096);
                prop_assert!(resp.len() >= HDR_SIZE);
            }
            g.ok(&Command::ResourceCreate2d {
                resource_id: 1000,
                format: 2,
                width: 8,
                height: 8,
            });
            Ok(())
        })
        .unwrap();
}
