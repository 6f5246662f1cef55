//! The guest program of `cargo xtask e2e`'s WebGPU scenario: inside a VM started with
//! `vm-cli --kernel … --gpu-mode wgpu`, run a vector add with the ordinary `wgpu` API
//! through the virtio-gpu device (`webgpu_guest::VirtioGpu`), check every element on the
//! CPU, and report on stdout (the serial console) in lines starting with `E2E `.
//!
//! `vm_compute frame W H FB`: compute a W×H XRGB8888 frame on the host's adapter (the
//! function [`frame_pixel`] in WGSL), read it back and write it to the framebuffer `FB` in
//! one `write()`; the host compares QEMU's screendump with the same function.

use webgpu_guest::kit;

const ADD: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> c: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&c) { c[id.x] = a[id.x] * 3u + b[id.x]; }
}
"#;

fn run(n: u32) -> Result<String, String> {
    let t0 = std::time::Instant::now();
    let gpu = webgpu_guest::VirtioGpu::open().map_err(|e| e.to_string())?;
    let instance = webgpu_guest::instance(Box::new(gpu));
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .map_err(|e| format!("request_adapter: {e}"))?;
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))
        .map_err(|e| format!("request_device: {e}"))?;
    let a: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let b: Vec<u32> = (0..n).map(|i| i ^ 0x5a5a_5a5a).collect();
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let (ba, bb) = (
        kit::buffer(&device, n as u64 * 4, usage),
        kit::buffer(&device, n as u64 * 4, usage),
    );
    queue.write_buffer(&ba, 0, &kit::u32_bytes(&a));
    queue.write_buffer(&bb, 0, &kit::u32_bytes(&b));
    let bc = kit::buffer(
        &device,
        n as u64 * 4,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    let mut enc = device.create_command_encoder(&Default::default());
    kit::encode_compute(
        &device,
        &mut enc,
        ADD,
        &[&ba, &bb, &bc],
        [n.div_ceil(64), 1, 1],
    );
    queue.submit([enc.finish()]);
    let got = kit::bytes_u32(&kit::read_buffer(&device, &queue, &bc)?);
    let bad = (0..n as usize)
        .filter(|&i| got.get(i) != Some(&a[i].wrapping_mul(3).wrapping_add(b[i])))
        .count();
    if got.len() != n as usize || bad > 0 {
        return Err(format!(
            "vector add: {bad} of {n} elements wrong ({} read back)",
            got.len()
        ));
    }
    let checked = t0.elapsed();
    // Round trips: an empty command buffer submitted and waited for, as a guest frame loop
    // or a compute loop would (one EXECBUFFER + fence + reply per iteration).
    let rounds = 100;
    let t1 = std::time::Instant::now();
    for _ in 0..rounds {
        let enc = device.create_command_encoder(&Default::default());
        queue.submit([enc.finish()]);
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("poll: {e}"))?;
    }
    let rtt = t1.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    Ok(format!(
        "vector-add {n} elements ok on {} in {:.0} ms; empty submit + wait round trip {rtt:.0} us (mean of {rounds})",
        info.name,
        checked.as_secs_f64() * 1e3
    ))
}

/// The frame's pixel at (x, y) of a w×h frame as (r, g, b); the host's e2e check has the
/// same function.
pub fn frame_pixel(x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    [
        (x * 255 / (w - 1).max(1)) as u8,
        (y * 255 / (h - 1).max(1)) as u8,
        ((x ^ y) & 0xff) as u8,
    ]
}

const FRAME: &str = r#"
struct Size { w: u32, h: u32 }
@group(0) @binding(0) var<uniform> size: Size;
@group(0) @binding(1) var<storage, read_write> px: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= size.w * size.h { return; }
    let x = i % size.w;
    let y = i / size.w;
    let r = x * 255u / max(size.w - 1u, 1u);
    let g = y * 255u / max(size.h - 1u, 1u);
    let b = (x ^ y) & 255u;
    px[i] = (r << 16u) | (g << 8u) | b;
}
"#;

fn frame(w: u32, h: u32, fb: &str) -> Result<String, String> {
    use std::io::Write;
    let t0 = std::time::Instant::now();
    let gpu = webgpu_guest::VirtioGpu::open().map_err(|e| e.to_string())?;
    let instance = webgpu_guest::instance(Box::new(gpu));
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .map_err(|e| format!("request_adapter: {e}"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))
        .map_err(|e| format!("request_device: {e}"))?;
    let bytes = w as u64 * h as u64 * 4;
    let mut u = [0u8; 16];
    u[..4].copy_from_slice(&w.to_le_bytes());
    u[4..8].copy_from_slice(&h.to_le_bytes());
    let size = kit::buffer(
        &device,
        16,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    );
    queue.write_buffer(&size, 0, &u);
    let px = kit::buffer(
        &device,
        bytes,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    let mut enc = device.create_command_encoder(&Default::default());
    kit::encode_compute(
        &device,
        &mut enc,
        FRAME,
        &[&size, &px],
        [(w * h).div_ceil(64), 1, 1],
    );
    queue.submit([enc.finish()]);
    let data = kit::read_buffer(&device, &queue, &px)?;
    let computed = t0.elapsed();
    // One write() for the whole frame (as the e2e's pattern: fbdev's damage clip).
    std::fs::OpenOptions::new()
        .write(true)
        .open(fb)
        .and_then(|mut f| f.write_all(&data))
        .map_err(|e| format!("writing {fb}: {e}"))?;
    Ok(format!(
        "frame {w}x{h} computed and read back in {:.0} ms, written to {fb}",
        computed.as_secs_f64() * 1e3
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("frame") {
        let num = |i: usize| {
            args.get(i)
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|v| *v > 0)
        };
        let (Some(w), Some(h), Some(fb)) = (num(1), num(2), args.get(3)) else {
            println!("E2E fail webgpu: usage: vm_compute frame W H FB");
            std::process::exit(2);
        };
        match frame(w, h, fb) {
            Ok(msg) => println!("E2E webgpu-frame {msg}"),
            Err(e) => {
                println!("E2E fail webgpu frame: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let n = args.first().and_then(|s| s.parse().ok()).unwrap_or(65_536);
    match run(n) {
        Ok(msg) => println!("E2E webgpu {msg}"),
        Err(e) => {
            println!("E2E fail webgpu: {e}");
            std::process::exit(1);
        }
    }
}
