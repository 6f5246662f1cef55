//! The render slice and the tiled matmul, natively and through the guest library + host
//! executor (on the adapter `WGPU_BACKEND`/`WGPU_ADAPTER_NAME` pick, lavapipe in CI): the
//! pixels and bits must be identical and the errors the same.

use std::sync::{mpsc, Arc, Mutex};

use webgpu_guest::kit;
use webgpu_host::{Budget, Host, InProcess};

fn host() -> Host {
    Host::from_env().expect("a wgpu adapter (install mesa-vulkan-drivers)")
}

fn native() -> (wgpu::Device, wgpu::Queue) {
    pollster::block_on(host().adapter().request_device(&Default::default())).unwrap()
}

fn remote_on(t: InProcess) -> (wgpu::Device, wgpu::Queue) {
    let instance = webgpu_guest::instance(Box::new(t));
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    pollster::block_on(adapter.request_device(&Default::default())).unwrap()
}

fn remote() -> (wgpu::Device, wgpu::Queue) {
    remote_on(InProcess::new(host().context(Budget::default())))
}

fn map_read(device: &wgpu::Device, buf: &wgpu::Buffer) -> Vec<u8> {
    kit::map_read(device, buf).expect("map")
}

fn init_buffer(device: &wgpu::Device, usage: wgpu::BufferUsages, data: &[u8]) -> wgpu::Buffer {
    kit::init_buffer(device, usage, data)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

const SCENE: &str = r#"
struct VsOut { @builtin(position) pos: vec4<f32>, @location(0) uv: vec2<f32>, @location(1) tint: vec4<f32> }
@vertex
fn vs(@location(0) pos: vec3<f32>, @location(1) uv: vec2<f32>, @location(2) tint: vec4<f32>) -> VsOut {
    var o: VsOut;
    o.pos = vec4<f32>(pos, 1.0);
    o.uv = uv;
    o.tint = tint;
    return o;
}
@group(0) @binding(0) var tex: texture_2d<f32>;
@group(0) @binding(1) var samp: sampler;
@fragment
fn fs(i: VsOut) -> @location(0) vec4<f32> {
    return textureSample(tex, samp, i.uv) * i.tint;
}
"#;

const W: u32 = 96;
const H: u32 = 64;

/// A textured quad (indexed) behind a tinted, half-transparent triangle, another triangle
/// half hidden by the depth test, with a viewport and a scissor: the RGBA8 pixels read back
/// through a texture-to-buffer copy.
fn scene(device: &wgpu::Device, queue: &wgpu::Queue) -> Vec<u8> {
    // A 4x4 checkerboard texture, uploaded with write_texture and filtered linearly.
    let mut texels = Vec::new();
    for y in 0..4u8 {
        for x in 0..4u8 {
            let on = (x + y) % 2 == 0;
            texels.extend_from_slice(&if on {
                [250, 240, 20, 255]
            } else {
                [20, 60, 200, 255]
            });
        }
    }
    let tex = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("checker"),
        size: wgpu::Extent3d {
            width: 4,
            height: 4,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    queue.write_texture(
        tex.as_image_copy(),
        &texels,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(16),
            rows_per_image: None,
        },
        tex.size(),
    );
    let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
        mag_filter: wgpu::FilterMode::Linear,
        min_filter: wgpu::FilterMode::Linear,
        address_mode_u: wgpu::AddressMode::Repeat,
        address_mode_v: wgpu::AddressMode::MirrorRepeat,
        ..Default::default()
    });
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("target"),
        size: wgpu::Extent3d {
            width: W,
            height: H,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let depth = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("depth"),
        size: target.size(),
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Depth32Float,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
        view_formats: &[],
    });
    // x, y, z, u, v, r, g, b, a
    #[rustfmt::skip]
    let verts: Vec<f32> = vec![
        // quad at depth 0.5, indexed
        -0.9, -0.9, 0.5,  0.0, 2.0,  1.0, 1.0, 1.0, 1.0,
         0.9, -0.9, 0.5,  2.0, 2.0,  1.0, 1.0, 1.0, 1.0,
         0.9,  0.9, 0.5,  2.0, 0.0,  1.0, 1.0, 1.0, 1.0,
        -0.9,  0.9, 0.5,  0.0, 0.0,  1.0, 1.0, 1.0, 1.0,
        // a red triangle in front (0.2), half transparent
        -0.5, -0.6, 0.2,  0.3, 0.3,  1.0, 0.2, 0.2, 0.5,
         0.6, -0.2, 0.2,  0.7, 0.3,  1.0, 0.2, 0.2, 0.5,
        -0.1,  0.7, 0.2,  0.5, 0.9,  1.0, 0.2, 0.2, 0.5,
        // a green triangle crossing the quad's depth: partly hidden
        -0.8,  0.1, 0.9,  0.1, 0.1,  0.2, 1.0, 0.3, 1.0,
         0.8,  0.8, 0.1,  0.9, 0.1,  0.2, 1.0, 0.3, 1.0,
         0.0, -0.8, 0.3,  0.5, 0.9,  0.2, 1.0, 0.3, 1.0,
    ];
    let vb = init_buffer(device, wgpu::BufferUsages::VERTEX, &f32s(&verts));
    let indices: Vec<u8> = [0u16, 1, 2, 0, 2, 3]
        .iter()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let ib = init_buffer(device, wgpu::BufferUsages::INDEX, &indices);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(SCENE.into()),
    });
    let attrs = wgpu::vertex_attr_array![0 => Float32x3, 1 => Float32x2, 2 => Float32x4];
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("scene"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[Some(wgpu::VertexBufferLayout {
                array_stride: 9 * 4,
                step_mode: wgpu::VertexStepMode::Vertex,
                attributes: &attrs,
            })],
        },
        primitive: wgpu::PrimitiveState {
            topology: wgpu::PrimitiveTopology::TriangleList,
            cull_mode: None,
            ..Default::default()
        },
        depth_stencil: Some(wgpu::DepthStencilState {
            format: wgpu::TextureFormat::Depth32Float,
            depth_write_enabled: Some(true),
            depth_compare: Some(wgpu::CompareFunction::Less),
            stencil: Default::default(),
            bias: Default::default(),
        }),
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
    let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(&tex.create_view(&Default::default())),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::Sampler(&sampler),
            },
        ],
    });
    let target_view = target.create_view(&Default::default());
    let depth_view = depth.create_view(&Default::default());
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("scene"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &target_view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color {
                        r: 0.1,
                        g: 0.1,
                        b: 0.15,
                        a: 1.0,
                    }),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: Some(wgpu::RenderPassDepthStencilAttachment {
                view: &depth_view,
                depth_ops: Some(wgpu::Operations {
                    load: wgpu::LoadOp::Clear(1.0),
                    store: wgpu::StoreOp::Store,
                }),
                stencil_ops: None,
            }),
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.set_viewport(2.0, 1.0, W as f32 - 4.0, H as f32 - 2.0, 0.0, 1.0);
        pass.set_scissor_rect(0, 0, W - 8, H);
        pass.set_vertex_buffer(0, vb.slice(..));
        pass.set_index_buffer(ib.slice(..), wgpu::IndexFormat::Uint16);
        pass.draw_indexed(0..6, 0, 0..1);
        pass.draw(7..10, 0..1);
        pass.draw(4..7, 0..1);
    }
    // Rows of a buffer copy are 256-byte aligned.
    let padded = (W * 4).next_multiple_of(256);
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (padded * H) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    enc.copy_texture_to_buffer(
        target.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &out,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(padded),
                rows_per_image: None,
            },
        },
        target.size(),
    );
    queue.submit([enc.finish()]);
    let raw = map_read(device, &out);
    raw.chunks(padded as usize)
        .flat_map(|r| r[..(W * 4) as usize].to_vec())
        .collect()
}

fn pixel(img: &[u8], x: u32, y: u32) -> [u8; 4] {
    let i = ((y * W + x) * 4) as usize;
    img[i..i + 4].try_into().unwrap()
}

#[test]
fn a_rendered_scene_equals_the_native_rendering_pixel_for_pixel() {
    let (nd, nq) = native();
    let (rd, rq) = remote();
    let want = scene(&nd, &nq);
    let got = scene(&rd, &rq);
    // The scene is what it claims: cleared border, scissored right edge, several colors.
    // (0.1 * 255 = 25.5 rounds either way: lavapipe gives 26, NVIDIA 25.)
    let near = |p: [u8; 4], q: [u8; 4]| p.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= 1);
    let clear = [26, 26, 38, 255];
    assert!(near(pixel(&want, 0, 0), clear), "clear color");
    assert!(near(pixel(&want, W - 2, H / 2), clear), "scissored");
    let distinct: std::collections::HashSet<[u8; 4]> =
        want.chunks(4).map(|p| p.try_into().unwrap()).collect();
    assert!(distinct.len() > 20, "{} colors", distinct.len());
    assert_eq!(got.len(), want.len());
    let differing = got
        .chunks(4)
        .zip(want.chunks(4))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "{differing} pixels differ");
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

fn matmul(device: &wgpu::Device, queue: &wgpu::Queue, n: u32) -> Vec<u8> {
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 997.0)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i * 104729) % 1000) as f32 / 991.0 - 0.5)
        .collect();
    let usage = wgpu::BufferUsages::STORAGE;
    let (ba, bb) = (
        init_buffer(device, usage, &f32s(&a)),
        init_buffer(device, usage, &f32s(&b)),
    );
    let size = (n * n * 4) as u64;
    let bc = kit::buffer(
        device,
        size,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    let dims = init_buffer(
        device,
        wgpu::BufferUsages::UNIFORM,
        &[n.to_le_bytes(), [0; 4], [0; 4], [0; 4]].concat(),
    );
    let staging = kit::buffer(
        device,
        size,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    );
    let mut enc = device.create_command_encoder(&Default::default());
    kit::encode_compute(
        device,
        &mut enc,
        MATMUL,
        &[&ba, &bb, &bc, &dims],
        [n / 16, n / 16, 1],
    );
    enc.copy_buffer_to_buffer(&bc, 0, &staging, 0, None);
    queue.submit([enc.finish()]);
    let out = map_read(device, &staging);
    // The product is right (within f32 rounding), not merely equal on both sides.
    let c: Vec<f32> = out
        .chunks(4)
        .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
        .collect();
    for (i, j) in [(0, 0), (n - 1, 3), (n / 2, n - 1)] {
        let want: f32 = (0..n)
            .map(|k| a[(i * n + k) as usize] * b[(k * n + j) as usize])
            .sum();
        assert!((c[(i * n + j) as usize] - want).abs() < 1e-3, "c[{i},{j}]");
    }
    out
}

#[test]
fn a_tiled_matmul_through_the_guest_library_is_bit_identical_to_native() {
    let (nd, nq) = native();
    let (rd, rq) = remote();
    assert_eq!(matmul(&rd, &rq, 128), matmul(&nd, &nq, 128));
}

fn captured(device: &wgpu::Device, f: impl FnOnce()) -> Option<String> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    f();
    pollster::block_on(scope.pop()).map(|e| e.to_string())
}

fn small_texture(device: &wgpu::Device, usage: wgpu::TextureUsages) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some("small"),
        size: wgpu::Extent3d {
            width: 8,
            height: 8,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage,
        view_formats: &[],
    })
}

fn texture_use_after_destroy(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<String> {
    let t = small_texture(
        device,
        wgpu::TextureUsages::COPY_SRC | wgpu::TextureUsages::COPY_DST,
    );
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("dst"),
        size: 256 * 8,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    t.destroy();
    captured(device, || {
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_texture_to_buffer(
            t.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &b,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(256),
                    rows_per_image: None,
                },
            },
            t.size(),
        );
        queue.submit([enc.finish()]);
    })
}

fn invalid_texture_usage(device: &wgpu::Device) -> Option<String> {
    // Rendering into a texture made only for sampling.
    let t = small_texture(device, wgpu::TextureUsages::TEXTURE_BINDING);
    let v = t.create_view(&Default::default());
    captured(device, || {
        let mut enc = device.create_command_encoder(&Default::default());
        drop(enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: None,
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &v,
                depth_slice: None,
                resolve_target: None,
                ops: Default::default(),
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        }));
        drop(enc.finish());
    })
}

fn write_without_copy_dst(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<String> {
    let t = small_texture(device, wgpu::TextureUsages::TEXTURE_BINDING);
    captured(device, || {
        queue.write_texture(
            t.as_image_copy(),
            &[0; 256],
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(32),
                rows_per_image: None,
            },
            wgpu::Extent3d {
                width: 8,
                height: 8,
                depth_or_array_layers: 1,
            },
        );
    })
}

/// Mapping a buffer that is already mapped: the second map's callback fails, and (as natively)
/// no error reaches the scope.
fn mapping_conflict(device: &wgpu::Device) -> (Option<String>, bool) {
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("mapped"),
        size: 64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let (tx, rx) = mpsc::channel();
    b.map_async(wgpu::MapMode::Read, .., move |r| {
        tx.send(r.is_ok()).unwrap()
    });
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert!(rx.recv().unwrap(), "the first map succeeds");
    let (tx, rx) = mpsc::channel();
    let err = captured(device, || {
        b.map_async(wgpu::MapMode::Read, .., move |r| {
            tx.send(r.is_ok()).unwrap()
        });
    });
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    (err, rx.recv().unwrap())
}

#[test]
fn texture_errors_and_mapping_conflicts_give_the_native_errors() {
    let (nd, nq) = native();
    let (rd, rq) = remote();
    let want = texture_use_after_destroy(&nd, &nq).expect("native error");
    assert_eq!(texture_use_after_destroy(&rd, &rq).as_deref(), Some(&*want));
    let want = invalid_texture_usage(&nd).expect("native error");
    assert_eq!(invalid_texture_usage(&rd).as_deref(), Some(&*want));
    let want = write_without_copy_dst(&nd, &nq).expect("native error");
    assert_eq!(write_without_copy_dst(&rd, &rq).as_deref(), Some(&*want));
    let want = mapping_conflict(&nd);
    assert!(!want.1, "the second map fails natively: {want:?}");
    assert_eq!(mapping_conflict(&rd), want);
}

#[test]
fn a_device_whose_context_the_host_drops_reports_lost_and_nothing_hangs() {
    let t = InProcess::new(host().context(Budget::default()));
    let ctx = t.context();
    let (rd, rq) = remote_on(t);
    let lost: Arc<Mutex<Vec<(wgpu::DeviceLostReason, String)>>> = Arc::default();
    let l2 = Arc::clone(&lost);
    rd.set_device_lost_callback(move |r, m| l2.lock().unwrap().push((r, m)));
    let b = rd.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    rq.submit([]);
    let (done_tx, done_rx) = mpsc::channel();
    rq.on_submitted_work_done(move || done_tx.send(()).unwrap());
    ctx.lock().unwrap().close("the VM was stopped");
    // The next call reaches the host, which answers that the context is gone.
    let (tx, rx) = mpsc::channel();
    b.map_async(wgpu::MapMode::Read, .., move |r| {
        tx.send(r.is_ok()).unwrap()
    });
    rd.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    assert!(!rx.recv().unwrap(), "mapping on a lost device fails");
    done_rx
        .try_recv()
        .expect("work-done callbacks run instead of waiting forever");
    let lost = lost.lock().unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].0, wgpu::DeviceLostReason::Unknown);
    assert!(lost[0].1.contains("the VM was stopped"), "{lost:?}");
}

#[test]
fn destroying_a_device_runs_its_lost_callback_like_native() {
    for (d, _q) in [native(), remote()] {
        let lost: Arc<Mutex<Vec<wgpu::DeviceLostReason>>> = Arc::default();
        let l2 = Arc::clone(&lost);
        d.set_device_lost_callback(move |r, _| l2.lock().unwrap().push(r));
        d.destroy();
        let _ = d.poll(wgpu::PollType::wait_indefinitely());
        assert_eq!(*lost.lock().unwrap(), [wgpu::DeviceLostReason::Destroyed]);
    }
}

#[test]
fn a_large_write_texture_travels_in_parts_and_lands_whole() {
    // 2048x2048 RGBA8 is 16 MiB + the row padding: over one part, under one message.
    let (rd, rq) = remote();
    let (w, h) = (2048u32, 2200u32);
    let t = rd.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: w,
            height: h,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::R32Uint,
        usage: wgpu::TextureUsages::COPY_DST | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let data: Vec<u8> = (0..w * h).flat_map(|i| i.to_le_bytes()).collect();
    let err = captured(&rd, || {
        rq.write_texture(
            t.as_image_copy(),
            &data,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(w * 4),
                rows_per_image: None,
            },
            t.size(),
        )
    });
    assert_eq!(err, None);
    let out = rd.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (w * 4) as u64 * 8,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    // The last rows came from the last part.
    let mut enc = rd.create_command_encoder(&Default::default());
    enc.copy_texture_to_buffer(
        wgpu::TexelCopyTextureInfo {
            texture: &t,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: 0,
                y: h - 8,
                z: 0,
            },
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer: &out,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(w * 4),
                rows_per_image: None,
            },
        },
        wgpu::Extent3d {
            width: w,
            height: 8,
            depth_or_array_layers: 1,
        },
    );
    rq.submit([enc.finish()]);
    let got = map_read(&rd, &out);
    let start = ((h - 8) * w * 4) as usize;
    assert_eq!(got, data[start..]);
}
