//! `cargo bench --bench webgpu_transport`: what the virtio-gpu transport of WebGPU costs,
//! without a VM. The same wgpu calls run (a) natively on the adapter, (b) through the guest
//! library and executor in one process (`webgpu_host::InProcess`), and (c) through the guest
//! library over the virtio-gpu device's 3D commands (the virtqueue harness: SUBMIT_3D
//! frames, replies written in place into a guest-memory resource, as in a VM minus the
//! kernel and QEMU). Prints each figure and the ratios to native measured in the same run.
//!
//! Workloads: the round trip of an empty command buffer submitted and waited for, and
//! 16 MiB written with `write_buffer` and read back with `map_async`.

#[path = "../tests/virtio_gpu_harness/mod.rs"]
mod virtio_gpu_harness;

use std::sync::mpsc;
use std::time::Instant;

use virtio_gpu_harness::webgpu::{be, config, DeviceTransport};
use virtio_gpu_harness::Guest;

fn rtt(device: &wgpu::Device, queue: &wgpu::Queue, rounds: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..rounds {
        let enc = device.create_command_encoder(&Default::default());
        queue.submit([enc.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

/// Seconds to write `bytes` and read them back (checked).
fn round_trip_bytes(device: &wgpu::Device, queue: &wgpu::Queue, bytes: u64) -> f64 {
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + (i >> 12)) as u8).collect();
    let mk = |usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage,
            mapped_at_creation: false,
        })
    };
    let src = mk(wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC);
    let dst = mk(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
    let t = Instant::now();
    queue.write_buffer(&src, 0, &data);
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
    queue.submit([enc.finish()]);
    let (tx, rx) = mpsc::channel();
    dst.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r).unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    rx.recv().unwrap().unwrap();
    let ok = *dst.get_mapped_range(..).unwrap() == data[..];
    let secs = t.elapsed().as_secs_f64();
    assert!(ok, "read back differs");
    dst.unmap();
    secs
}

fn remote(instance: wgpu::Instance) -> (wgpu::Device, wgpu::Queue) {
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    pollster::block_on(adapter.request_device(&Default::default())).unwrap()
}

fn main() {
    let be = be();
    let adapter = be.context().unwrap().adapter.clone();
    let info = adapter.get_info();
    println!(
        "adapter: {} ({:?}, driver {})",
        info.name, info.backend, info.driver_info
    );
    let native = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let host = webgpu_host::Host::new(adapter);
    let in_process = remote(webgpu_guest::instance(Box::new(
        webgpu_host::InProcess::new(host.context(webgpu_host::Budget::default())),
    )));
    // 1 MiB request parts, a 64 MiB reply area (as big replies end up in the guest library).
    let device = remote(webgpu_guest::instance(Box::new(DeviceTransport::new(
        Guest::new(&be, config(true)),
        64 << 20,
        1 << 20,
    ))));
    let peers = [
        ("native", &native),
        ("in-process", &in_process),
        ("virtio-gpu", &device),
    ];
    let rounds = 500;
    let bytes = 16u64 << 20;
    let mut rtts = Vec::new();
    let mut bws = Vec::new();
    for (name, (d, q)) in peers {
        rtt(d, q, 20); // warm up
        let r = rtt(d, q, rounds);
        round_trip_bytes(d, q, bytes);
        let best = (0..3)
            .map(|_| round_trip_bytes(d, q, bytes))
            .fold(f64::MAX, f64::min);
        let bw = 2.0 * bytes as f64 / best / 1e9;
        println!(
            "{name:>10}: empty submit + wait {r:8.1} us (mean of {rounds}); 16 MiB write + read back {:.1} ms, {bw:.2} GB/s moved (best of 3)",
            best * 1e3
        );
        rtts.push(r);
        bws.push(bw);
    }
    println!(
        "ratios to native: round trip in-process {:.2}x, virtio-gpu {:.2}x (goal: within 3x); bandwidth in-process {:.2}x, virtio-gpu {:.2}x",
        rtts[1] / rtts[0],
        rtts[2] / rtts[0],
        bws[1] / bws[0],
        bws[2] / bws[0]
    );
}
