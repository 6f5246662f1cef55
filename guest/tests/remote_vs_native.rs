//! The same wgpu programs run natively and through the guest library + host executor (on the
//! adapter `WGPU_BACKEND`/`WGPU_ADAPTER_NAME` pick, lavapipe in CI): results must be
//! bit-identical and errors the same.

use std::sync::{mpsc, Arc};

use webgpu_guest::kit;
use webgpu_host::{Budget, Host, InProcess};

fn native() -> (wgpu::Device, wgpu::Queue) {
    let host = Host::from_env().expect("a wgpu adapter (install mesa-vulkan-drivers)");
    pollster::block_on(host.adapter().request_device(&Default::default())).unwrap()
}

fn remote_with(host: &Host, budget: Budget) -> (wgpu::Device, wgpu::Queue) {
    let t = InProcess::new(host.context(budget));
    let instance = webgpu_guest::instance(Box::new(t));
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    pollster::block_on(adapter.request_device(&Default::default())).unwrap()
}

fn remote() -> (wgpu::Device, wgpu::Queue) {
    remote_with(&Host::from_env().unwrap(), Budget::default())
}

fn read_back(device: &wgpu::Device, queue: &wgpu::Queue, src: &wgpu::Buffer) -> Vec<u8> {
    kit::read_buffer(device, queue, src).expect("read back")
}

fn storage(device: &wgpu::Device, data: &[u32]) -> wgpu::Buffer {
    kit::init_buffer(
        device,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        &kit::u32_bytes(data),
    )
}

const VECTOR_ADD: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&c) { c[id.x] = a[id.x] * 1.5 + b[id.x] / 3.0; }
}
"#;

fn vector_add(device: &wgpu::Device, queue: &wgpu::Queue) -> Vec<u8> {
    let n = 10_000u32;
    let a: Vec<u32> = (0..n).map(|i| (i as f32 * 0.37).to_bits()).collect();
    let b: Vec<u32> = (0..n)
        .map(|i| (1.0f32 / (i as f32 + 1.0)).to_bits())
        .collect();
    let (ba, bb) = (storage(device, &a), storage(device, &b));
    let bc = kit::buffer(
        device,
        n as u64 * 4,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    let mut enc = device.create_command_encoder(&Default::default());
    kit::encode_compute(
        device,
        &mut enc,
        VECTOR_ADD,
        &[&ba, &bb, &bc],
        [n.div_ceil(64), 1, 1],
    );
    queue.submit([enc.finish()]);
    read_back(device, queue, &bc)
}

const PREFIX_SUM: &str = r#"
struct Params { stride: u32 }
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= arrayLength(&dst) { return; }
    if i >= params.stride { dst[i] = src[i] + src[i - params.stride]; } else { dst[i] = src[i]; }
}
"#;

/// Hillis-Steele inclusive scan: log2(n) passes ping-ponging two buffers, with an explicit
/// bind group layout, pipeline layout, uniform buffer and `write_buffer`.
fn prefix_sum(device: &wgpu::Device, queue: &wgpu::Queue) -> Vec<u8> {
    let n = 4096u32;
    let data: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2654435761) >> 20).collect();
    let bufs = [
        storage(device, &data),
        storage(device, &vec![0; n as usize]),
    ];
    let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &[
            entry(0, wgpu::BufferBindingType::Storage { read_only: true }),
            entry(1, wgpu::BufferBindingType::Storage { read_only: false }),
            entry(2, wgpu::BufferBindingType::Uniform),
        ],
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(PREFIX_SUM.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: Some(&layout),
        module: &module,
        entry_point: None,
        compilation_options: Default::default(),
        cache: None,
    });
    let mut stride = 1u32;
    let mut cur = 0;
    while stride < n {
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&params, 0, &stride.to_le_bytes());
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &bgl,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: bufs[cur].as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: bufs[1 - cur].as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: params.as_entire_binding(),
                },
            ],
        });
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(n / 64, 1, 1);
        }
        queue.submit([enc.finish()]);
        stride *= 2;
        cur = 1 - cur;
    }
    let out = read_back(device, queue, &bufs[cur]);
    // The scan is right, not merely equal on both sides.
    let got: Vec<u32> = out
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut acc = 0u32;
    for (i, v) in data.iter().enumerate() {
        acc = acc.wrapping_add(*v);
        assert_eq!(got[i], acc, "prefix sum at {i}");
    }
    out
}

#[test]
fn vector_add_through_the_guest_library_is_bit_identical_to_native() {
    let (nd, nq) = native();
    let (rd, rq) = remote();
    let want = vector_add(&nd, &nq);
    let got = vector_add(&rd, &rq);
    assert_eq!(got.len(), 40_000);
    assert!(got.iter().any(|b| *b != 0));
    assert_eq!(got, want);
}

#[test]
fn prefix_sum_through_the_guest_library_is_bit_identical_to_native() {
    let (nd, nq) = native();
    let (rd, rq) = remote();
    assert_eq!(prefix_sum(&rd, &rq), prefix_sum(&nd, &nq));
}

fn captured(device: &wgpu::Device, f: impl FnOnce()) -> Option<wgpu::Error> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    f();
    pollster::block_on(scope.pop())
}

fn invalid_wgsl(device: &wgpu::Device) -> Option<wgpu::Error> {
    captured(device, || {
        let _module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(
                "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }".into(),
            ),
        });
    })
}

#[test]
fn invalid_wgsl_gives_the_native_validation_error() {
    let (nd, _) = native();
    let (rd, _) = remote();
    let want = invalid_wgsl(&nd)
        .expect("native rejects the shader")
        .to_string();
    let got = invalid_wgsl(&rd).expect("remote rejects the shader");
    assert!(matches!(got, wgpu::Error::Validation { .. }));
    assert_eq!(got.to_string(), want);
}

fn out_of_bounds_copy(device: &wgpu::Device) -> Option<wgpu::Error> {
    let a = storage(device, &[1, 2, 3, 4]);
    let b = storage(device, &[0; 2]);
    captured(device, || {
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&a, 0, &b, 0, 16);
        drop(enc.finish());
    })
}

fn use_after_destroy(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<wgpu::Error> {
    let a = storage(device, &[1, 2, 3, 4]);
    let b = storage(device, &[0; 4]);
    b.destroy();
    captured(device, || {
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&a, 0, &b, 0, 16);
        queue.submit([enc.finish()]);
    })
}

#[test]
fn out_of_bounds_and_use_after_destroy_give_the_native_errors() {
    let (nd, nq) = native();
    let (rd, rq) = remote();
    let want = out_of_bounds_copy(&nd).expect("native error").to_string();
    assert_eq!(
        out_of_bounds_copy(&rd).expect("remote error").to_string(),
        want
    );
    let want = use_after_destroy(&nd, &nq)
        .expect("native error")
        .to_string();
    assert_eq!(
        use_after_destroy(&rd, &rq)
            .expect("remote error")
            .to_string(),
        want
    );
}

#[test]
fn a_context_over_its_budget_gets_oom_while_another_keeps_working() {
    let host = Host::from_env().unwrap();
    let small = Budget {
        max_bytes: 1 << 20,
        ..Budget::default()
    };
    let (d1, q1) = remote_with(&host, small);
    let (d2, q2) = remote_with(&host, Budget::default());
    let scope = d1.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let _big = d1.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 2 << 20,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let e = pollster::block_on(scope.pop()).expect("out of memory");
    assert!(matches!(e, wgpu::Error::OutOfMemory { .. }), "{e:?}");
    assert!(format!("{:?}", e).contains("budget"), "{e:?}");
    // The other context (another VM) is unaffected, and so is the small one within budget.
    let (nd, nq) = native();
    let want = vector_add(&nd, &nq);
    assert_eq!(vector_add(&d2, &q2), want);
    let small_ok = captured(&d1, || {
        let b = storage(&d1, &[7; 16]);
        assert_eq!(
            read_back(&d1, &q1, &b),
            [7u32; 16]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
    });
    assert!(small_ok.is_none(), "{small_ok:?}");
}

#[test]
fn unsupported_operations_report_an_error_instead_of_panicking() {
    let (rd, _) = remote();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    rd.on_uncaptured_error(Arc::new(move |e| s2.lock().unwrap().push(e.to_string())));
    let _t = rd.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 4,
            height: 4,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Bc1RgbaUnorm,
        usage: wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let _q = rd.create_query_set(&wgpu::QuerySetDescriptor {
        label: None,
        ty: wgpu::QueryType::Occlusion,
        count: 4,
    });
    let seen = seen.lock().unwrap();
    for what in ["texture format Bc1RgbaUnorm", "query sets"] {
        assert!(
            seen.iter()
                .any(|m| m.contains(&format!("{what} is not supported"))),
            "{seen:?}"
        );
    }
}

#[test]
fn the_guest_library_works_over_a_socketpair_to_an_executor_thread() {
    let host = Host::from_env().unwrap();
    let (guest_end, host_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let ctx = host.context(Budget::default());
    let server = std::thread::spawn(move || webgpu_host::serve_stream(host_end, ctx));
    let (nd, nq) = native();
    let want = vector_add(&nd, &nq);
    {
        let instance =
            webgpu_guest::instance(Box::new(webgpu_guest::StreamTransport::new(guest_end)));
        let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
        let (rd, rq) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
        assert_eq!(vector_add(&rd, &rq), want);
    }
    // Dropping the instance closes the guest's end: the executor's loop ends cleanly.
    server.join().unwrap().unwrap();
}

/// `map_async(Write)` keeps the bytes the program does not write, like a native mapping.
fn map_write_partial(device: &wgpu::Device, queue: &wgpu::Queue) -> Vec<u8> {
    let up = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: true,
    });
    up.get_mapped_range_mut(..).unwrap().slice(..).fill(0xab);
    up.unmap();
    let (tx, rx) = mpsc::channel();
    up.map_async(wgpu::MapMode::Write, 16..32, move |r| tx.send(r).unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    rx.recv().unwrap().expect("map for writing");
    up.get_mapped_range_mut(16..24)
        .unwrap()
        .copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    up.unmap();
    let dst = storage(device, &[0; 16]);
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&up, 0, &dst, 0, 64);
    queue.submit([enc.finish()]);
    read_back(device, queue, &dst)
}

#[test]
fn mapping_for_write_keeps_unwritten_bytes_like_native() {
    let (nd, nq) = native();
    let (rd, rq) = remote();
    let want = map_write_partial(&nd, &nq);
    assert_eq!(&want[16..24], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(want[24], 0xab);
    assert_eq!(map_write_partial(&rd, &rq), want);
}

#[test]
fn on_submitted_work_done_fires_after_poll() {
    let (rd, rq) = remote();
    let b = storage(&rd, &[1; 4]);
    let mut enc = rd.create_command_encoder(&Default::default());
    enc.clear_buffer(&b, 0, None);
    rq.submit([enc.finish()]);
    let (tx, rx) = mpsc::channel();
    rq.on_submitted_work_done(move || tx.send(()).unwrap());
    let status = rd.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert!(status.is_queue_empty());
    rx.try_recv().expect("callback ran during poll");
    assert_eq!(read_back(&rd, &rq, &b), vec![0; 16]);
}

/// A pipeline and bind group the program drops while its encoder still records them run
/// at submit, as natively (wgpu keeps what an encoder names alive): the guest library holds
/// their release back until the encoder is finished.
#[test]
fn objects_dropped_while_an_encoder_records_them_still_run() {
    let run = |device: &wgpu::Device, queue: &wgpu::Queue| {
        let src = storage(device, &[5, 6, 7, 8]);
        let dst = storage(device, &[0; 4]);
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let pipeline = kit::compute_pipeline(device, DOUBLE);
            let bind_group = kit::bind_buffers(device, &pipeline, &[&src, &dst]);
            kit::dispatch(&mut enc, &pipeline, &bind_group, [1, 1, 1]);
            // Both dropped here, before `finish`.
        }
        queue.submit([enc.finish()]);
        kit::bytes_u32(&read_back(device, queue, &dst))
    };
    let (nd, nq) = native();
    let (rd, rq) = remote();
    assert_eq!(run(&nd, &nq), vec![10, 12, 14, 16]);
    assert_eq!(run(&rd, &rq), vec![10, 12, 14, 16]);
}

const DOUBLE: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> b: array<u32>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) { b[id.x] = a[id.x] * 2u; }
"#;
