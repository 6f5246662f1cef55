//! `cargo bench --bench webgpu_guest`: the same workloads run natively through wgpu on the
//! adapter and through the guest library + host executor over a socketpair transport (the
//! executor on its own thread, as in the vhost-user backend), in one run, on one adapter.
//! Prints the throughput of each and the ratio remote/native, and the round trip of an empty
//! submit + fence (µs).
//!
//! Sizes (environment; the defaults are issue 16's):
//! - `WEBGPU_BENCH_MATMUL_N` (2048): f32 matmul N×N×N, 16×16 tiles in workgroup memory.
//! - `WEBGPU_BENCH_BW_MIB` (256): a streaming kernel `dst = src * a + b` over this many MiB
//!   (half read, half written).
//! - `WEBGPU_BENCH_DRAWS` (1000), `WEBGPU_BENCH_WIDTH`×`WEBGPU_BENCH_HEIGHT` (1920×1080):
//!   one render pass of that many draws (a triangle each) into an RGBA8 target.
//! - `WEBGPU_BENCH_REPS` (5): timed repetitions of each workload after one warm-up.
//! - `WEBGPU_BENCH_FENCE_ITERS` (500): empty submit + fence round trips timed.
//!
//! Adapter: `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`, as for the executor.

use std::time::{Duration, Instant};

use webgpu_guest::kit;
use webgpu_host::{Budget, Host};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Sizes {
    matmul_n: u32,
    bw_mib: u64,
    draws: u32,
    width: u32,
    height: u32,
    reps: u32,
    fence_iters: u32,
}

const MATMUL: &str = r#"
struct Dims { n: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;
const T: u32 = 16u;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let n = dims.n;
    var acc = 0.0;
    for (var t = 0u; t < n / T; t++) {
        ta[l.y][l.x] = a[g.y * n + t * T + l.x];
        tb[l.y][l.x] = b[(t * T + l.y) * n + g.x];
        workgroupBarrier();
        for (var k = 0u; k < T; k++) { acc = fma(ta[l.y][k], tb[k][l.x], acc); }
        workgroupBarrier();
    }
    c[g.y * n + g.x] = acc;
}
"#;

const STREAM: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = g.y * n.x * 256u + g.x;
    if i < arrayLength(&dst) { dst[i] = src[i] * 1.0001 + vec4<f32>(0.5); }
}
"#;

const TRIANGLES: &str = r#"
struct VsOut { @builtin(position) pos: vec4<f32>, @location(0) color: vec4<f32> }
@vertex
fn vs(@builtin(vertex_index) v: u32, @builtin(instance_index) i: u32) -> VsOut {
    let cx = f32(i % 40u) / 20.0 - 0.975;
    let cy = f32(i / 40u % 25u) / 12.5 - 0.96;
    let corner = array(vec2(-0.06, -0.08), vec2(0.06, -0.08), vec2(0.0, 0.08));
    var o: VsOut;
    o.pos = vec4(vec2(cx, cy) + corner[v], f32(i % 7u) / 8.0, 1.0);
    o.color = vec4(f32(i % 3u) / 2.0, f32(i % 5u) / 4.0, f32(i % 11u) / 10.0, 0.7);
    return o;
}
@fragment
fn fs(i: VsOut) -> @location(0) vec4<f32> { return i.color; }
"#;

fn storage(device: &wgpu::Device, bytes: u64) -> wgpu::Buffer {
    kit::buffer(
        device,
        bytes,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
    )
}

/// Submits `enc`'s work and waits for it.
fn run(device: &wgpu::Device, queue: &wgpu::Queue, cb: wgpu::CommandBuffer) {
    queue.submit([cb]);
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
}

/// Times `reps` runs of `frame` after one warm-up; returns the mean.
fn timed(reps: u32, mut frame: impl FnMut()) -> Duration {
    frame();
    let t = Instant::now();
    for _ in 0..reps {
        frame();
    }
    t.elapsed() / reps.max(1)
}

struct Results {
    matmul: Duration,
    stream: Duration,
    render: Duration,
    fence: Duration,
}

fn workloads(device: &wgpu::Device, queue: &wgpu::Queue, s: &Sizes) -> Results {
    let limits = device.limits();
    // Matmul: inputs filled with write_buffer, outside the timing.
    let n = s.matmul_n;
    let nn = (n as u64) * (n as u64);
    let (a, b, c) = (
        storage(device, nn * 4),
        storage(device, nn * 4),
        storage(device, nn * 4),
    );
    let fill: Vec<u8> = (0..nn)
        .flat_map(|i| ((i % 97) as f32 / 97.0).to_le_bytes())
        .collect();
    queue.write_buffer(&a, 0, &fill);
    queue.write_buffer(&b, 0, &fill);
    drop(fill);
    let dims = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&dims, 0, &n.to_le_bytes());
    let mm = kit::compute_pipeline(device, MATMUL);
    let mm_bg = kit::bind_buffers(device, &mm, &[&a, &b, &c, &dims]);
    let matmul = timed(s.reps, || {
        let mut enc = device.create_command_encoder(&Default::default());
        kit::dispatch(&mut enc, &mm, &mm_bg, [n / 16, n / 16, 1]);
        run(device, queue, enc.finish());
    });
    drop((a, b, c));

    // Streaming kernel: half the bytes read, half written.
    let half = (s.bw_mib << 20) / 2;
    let half = half
        .min(limits.max_storage_buffer_binding_size)
        .min(limits.max_buffer_size)
        / 16
        * 16;
    let (src, dst) = (storage(device, half), storage(device, half));
    let st = kit::compute_pipeline(device, STREAM);
    let st_bg = kit::bind_buffers(device, &st, &[&src, &dst]);
    let groups = (half / 16).div_ceil(256) as u32;
    let gx = groups.min(32768);
    let gy = groups.div_ceil(gx);
    let stream = timed(s.reps, || {
        let mut enc = device.create_command_encoder(&Default::default());
        kit::dispatch(&mut enc, &st, &st_bg, [gx, gy, 1]);
        run(device, queue, enc.finish());
    });
    drop((src, dst));

    // Render: `draws` draw calls into a width×height target.
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: s.width,
            height: s.height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
        view_formats: &[],
    });
    let view = target.create_view(&Default::default());
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(TRIANGLES.into()),
    });
    let rp = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: None,
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        primitive: Default::default(),
        depth_stencil: None,
        multisample: Default::default(),
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(wgpu::ColorTargetState {
                format: wgpu::TextureFormat::Rgba8Unorm,
                blend: Some(wgpu::BlendState::ALPHA_BLENDING),
                write_mask: wgpu::ColorWrites::ALL,
            })],
        }),
        multiview_mask: None,
        cache: None,
    });
    let render = timed(s.reps, || {
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: None,
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            pass.set_pipeline(&rp);
            for i in 0..s.draws {
                pass.draw(0..3, i..i + 1);
            }
        }
        run(device, queue, enc.finish());
    });

    // Empty submit + fence.
    let fence = timed(s.fence_iters, || {
        queue.submit([]);
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    });
    Results {
        matmul,
        stream,
        render,
        fence,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let s = Sizes {
        matmul_n: (env("WEBGPU_BENCH_MATMUL_N", 2048) as u32 / 16).max(1) * 16,
        bw_mib: env("WEBGPU_BENCH_BW_MIB", 256).max(1),
        draws: env("WEBGPU_BENCH_DRAWS", 1000) as u32,
        width: env("WEBGPU_BENCH_WIDTH", 1920).max(1) as u32,
        height: env("WEBGPU_BENCH_HEIGHT", 1080).max(1) as u32,
        reps: env("WEBGPU_BENCH_REPS", 5).max(1) as u32,
        fence_iters: env("WEBGPU_BENCH_FENCE_ITERS", 500).max(1) as u32,
    };
    let host = match Host::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("webgpu_guest bench: {e}");
            std::process::exit(1);
        }
    };
    let info = host.adapter().get_info();
    println!(
        "adapter: {} ({:?}, driver {} {})",
        info.name, info.backend, info.driver, info.driver_info
    );
    println!(
        "sizes: matmul {n}x{n}x{n} f32, stream {} MiB, render {} draws into {}x{}, {} reps, {} fence round trips",
        s.bw_mib, s.draws, s.width, s.height, s.reps, s.fence_iters,
        n = s.matmul_n
    );

    // The native device asks for the adapter's limits, as the executor grants a guest.
    let limits = host.adapter().limits();
    let desc = wgpu::DeviceDescriptor {
        required_limits: limits.clone(),
        ..Default::default()
    };
    let (nd, nq) = pollster::block_on(host.adapter().request_device(&desc)).unwrap();
    let native = workloads(&nd, &nq, &s);
    drop((nd, nq));

    let (guest_end, host_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let budget = Budget {
        max_bytes: u64::MAX,
        ..Budget::default()
    };
    let ctx = host.context(budget);
    let server = std::thread::spawn(move || webgpu_host::serve_stream(host_end, ctx));
    let remote = {
        let instance =
            webgpu_guest::instance(Box::new(webgpu_guest::StreamTransport::new(guest_end)));
        let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
        let (rd, rq) = pollster::block_on(adapter.request_device(&desc)).unwrap();
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let e2 = std::sync::Arc::clone(&errors);
        rd.on_uncaptured_error(std::sync::Arc::new(move |e| {
            e2.lock().unwrap().push(e.to_string())
        }));
        let r = workloads(&rd, &rq, &s);
        let errors = errors.lock().unwrap();
        if !errors.is_empty() {
            eprintln!("remote run reported errors: {errors:?}");
            std::process::exit(1);
        }
        r
    };
    let _ = server.join();

    let n = s.matmul_n as f64;
    let gflops = |d: Duration| 2.0 * n * n * n / d.as_secs_f64() / 1e9;
    let gibs = |d: Duration| (s.bw_mib as f64 / 1024.0) / d.as_secs_f64();
    let fps = |d: Duration| 1.0 / d.as_secs_f64();
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "workload", "native", "remote", "ratio"
    );
    let row = |name: &str, unit: &str, f: &dyn Fn(Duration) -> f64, a: Duration, b: Duration| {
        println!(
            "{:<34} {:>12} {:>12} {:>8.3}",
            name,
            format!("{:.2} {unit}", f(a)),
            format!("{:.2} {unit}", f(b)),
            f(b) / f(a)
        );
    };
    row(
        "matmul (GFLOP/s)",
        "",
        &gflops,
        native.matmul,
        remote.matmul,
    );
    row("stream (GiB/s)", "", &gibs, native.stream, remote.stream);
    row("render (frames/s)", "", &fps, native.render, remote.render);
    println!(
        "{:<34} {:>12} {:>12} {:>8.3}",
        "empty submit + fence (us)",
        format!("{:.1}", native.fence.as_secs_f64() * 1e6),
        format!("{:.1}", remote.fence.as_secs_f64() * 1e6),
        remote.fence.as_secs_f64() / native.fence.as_secs_f64()
    );
}
