//! virtio-gpu throughput through the real virtqueue path on the real wgpu adapter:
//!
//! * full frames: TRANSFER_TO_HOST_2D of the whole resource from a backing scattered over
//!   shuffled 4 KiB pages, then a fenced RESOURCE_FLUSH (the fence makes each frame complete
//!   on the GPU before the next starts), at 1920×1080 and 3840×2160, next to a plain memcpy
//!   of the same bytes measured in the same run;
//! * text cells: 64×16-pixel dirty rectangles (TRANSFER + FLUSH) walking over a 1920×1080
//!   console, 1, 8 or 60 updates per queue kick, the last flush of each kick fenced.
//!
//! `cargo bench -p vm-device --bench virtio_gpu` (WGPU_BACKEND picks the backend;
//! VIRTIO_GPU_BENCH_SECS sets the time per measurement, default 2;
//! VIRTIO_GPU_BENCH_ONLY=1080p|4k|text|text1|text8|text60 selects cases;
//! VIRTIO_GPU_BENCH_GATHER=gpu|cpu forces the transfer path).

#[path = "../tests/virtio_gpu_harness/mod.rs"]
mod harness;

use std::hint::black_box;
use std::time::{Duration, Instant};

use harness::Guest;
use vm_device::gpu_virt::virtio_gpu::protocol::ctrl;
use vm_device::gpu_virt::virtio_gpu::{
    Command, CtrlHeader, Format, GpuGather, QueueKind, Rect, VirtioGpuConfig,
};
use vm_device::gpu_virt::WgpuBackend;
use vm_memory::{Bytes, GuestAddress};

/// Alternating measurement rounds per full-frame case.
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Set when run by `cargo test`: each case runs only a few iterations.
static SMOKE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// CPU time (user + system) of the whole process, all threads (the CPU adapters' worker
/// threads included), from /proc/self/stat; 0 where unavailable.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // USER_HZ is 100 on Linux.
    f.iter().sum::<u64>() as f64 / 100.0
}

fn budget() -> Duration {
    if SMOKE.load(std::sync::atomic::Ordering::Relaxed) {
        return Duration::ZERO;
    }
    let s = std::env::var("VIRTIO_GPU_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s / ROUNDS as f64)
}

/// Runs `f` repeatedly for about `budget()` (a round's share of VIRTIO_GPU_BENCH_SECS) after
/// one warm-up call; returns (iterations, seconds).
fn measure(mut f: impl FnMut()) -> (u64, f64) {
    f();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget() || n < 3 {
        f();
        n += 1;
    }
    (n, t.elapsed().as_secs_f64())
}

/// VIRTIO_GPU_BENCH_GATHER=gpu|cpu forces the transfer path (default: the device's choice).
fn gather_policy() -> GpuGather {
    match std::env::var("VIRTIO_GPU_BENCH_GATHER").as_deref() {
        Ok("gpu") => GpuGather::Always,
        Ok("cpu") => GpuGather::Never,
        _ => GpuGather::Auto,
    }
}

fn full_frames(be: &WgpuBackend, w: u32, h: u32) {
    let mut g = Guest::new(
        be,
        VirtioGpuConfig {
            scanouts: vec![(w, h)],
            gpu_gather: gather_policy(),
            ..Default::default()
        },
    );
    let buf = g.resource(1, Format::B8G8R8X8, w, h);
    g.paint(1, &buf, w, h, |x, y| [x as u8, y as u8, (x ^ y) as u8, 0]);
    let full = Rect::new(0, 0, w, h);
    g.ok(&Command::SetScanout {
        rect: full,
        scanout_id: 0,
        resource_id: 1,
    });
    let bytes = w as u64 * h as u64 * 4;
    let src = vec![0x5au8; bytes as usize];
    let mut dst = vec![0u8; bytes as usize];
    // Frames and memcpy alternate in ROUNDS rounds, so both see the same machine load; the
    // medians are reported.
    let (mut fps_v, mut mem_v, mut ratio_v, mut cpu_v, mut gather_v) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut n = 0;
    for _ in 0..ROUNDS {
        let c0 = cpu_secs();
        let (k, secs) = measure(|| {
            g.ok(&Command::TransferToHost2d {
                rect: full,
                offset: 0,
                resource_id: 1,
            });
            assert_eq!(
                g.fenced(&Command::ResourceFlush {
                    rect: full,
                    resource_id: 1
                }),
                ctrl::RESP_OK_NODATA
            );
        });
        let c1 = cpu_secs();
        n += k;
        let (mn, msecs) = measure(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        });
        let c2 = cpu_secs();
        // The CPU part alone: the same scattered pages copied into a host buffer, page by
        // page, with no GPU (how much of the gap to memcpy is the scatter itself).
        let (gn, gsecs) = measure(|| {
            for (i, page) in buf.pages.iter().enumerate() {
                let at = i * 4096;
                let n = (bytes as usize - at).min(4096);
                g.mem
                    .read_slice(&mut dst[at..at + n], GuestAddress(*page))
                    .expect("backing page");
            }
            black_box(&mut dst);
        });
        gather_v.push(gn as f64 / gsecs * bytes as f64 / 1e9);
        let fps = k as f64 / secs;
        let m_gbs = mn as f64 / msecs * bytes as f64 / 1e9;
        fps_v.push(fps);
        mem_v.push(m_gbs);
        ratio_v.push(fps * bytes as f64 / 1e9 / m_gbs);
        // CPU seconds per memcpy / CPU seconds per frame: the share of memcpy's efficiency,
        // by CPU cost rather than wall time (steadier on a shared machine).
        if c1 > c0 && c2 > c1 {
            cpu_v.push(((c2 - c1) / (mn + 1) as f64) / ((c1 - c0) / (k + 1) as f64));
        }
    }
    let (fps, m_gbs, ratio) = (median(fps_v), median(mem_v), median(ratio_v));
    let gbs = fps * bytes as f64 / 1e9;
    let cpu = if cpu_v.is_empty() {
        "n/a".to_string()
    } else {
        format!("{:.0}%", 100.0 * median(cpu_v))
    };
    println!(
        "full frame {w}x{h}: {fps:8.1} frames/s {gbs:6.2} GB/s ({:.2} ms/frame) | memcpy {m_gbs:6.2} GB/s ({:.2} ms) | ratio {:.0}% of memcpy by wall time, {cpu} by CPU time (medians of {ROUNDS} rounds)",
        1e3 / fps,
        1e3 * bytes as f64 / 1e9 / m_gbs,
        100.0 * ratio
    );
    let path = if g.dev.gpu_gathered_transfers() > 0 {
        "GPU gather from the guest pages in place"
    } else {
        "CPU gather into staging memory"
    };
    println!("  path: {path}");
    let g_gbs = median(gather_v);
    println!(
        "  CPU only, the same scattered 4 KiB pages copied to a host buffer: {g_gbs:6.2} GB/s ({:.0}% of memcpy)",
        100.0 * g_gbs / m_gbs
    );
    let s = g.dev.stats();
    assert_eq!(s.total_errors(), 0);
    assert!(s.frames_presented >= n);
}

fn text_cells(be: &WgpuBackend, per_kick: u64) {
    let (w, h) = (1920u32, 1080u32);
    let mut g = Guest::new(
        be,
        VirtioGpuConfig {
            scanouts: vec![(w, h)],
            gpu_gather: gather_policy(),
            ..Default::default()
        },
    );
    let buf = g.resource(1, Format::B8G8R8X8, w, h);
    g.paint(1, &buf, w, h, |x, y| [x as u8, y as u8, 0, 0]);
    g.ok(&Command::SetScanout {
        rect: Rect::new(0, 0, w, h),
        scanout_id: 0,
        resource_id: 1,
    });
    let (cols, rows) = (w / 64, h / 16);
    let mut i = 0u64;
    // Each kick carries `per_kick` TRANSFER + FLUSH pairs; the last flush is fenced, so every
    // kick completes on the GPU before the next.
    let (n, secs) = measure(|| {
        let mut reqs = Vec::new();
        for k in 0..per_kick {
            let cell = Rect::new(
                (i % cols as u64) as u32 * 64,
                ((i / cols as u64) % rows as u64) as u32 * 16,
                64,
                16,
            );
            i += 1;
            let t = Command::TransferToHost2d {
                rect: cell,
                offset: (cell.y as u64 * w as u64 + cell.x as u64) * 4,
                resource_id: 1,
            };
            reqs.push((t.encode(CtrlHeader::default()), 24));
            let f = Command::ResourceFlush {
                rect: cell,
                resource_id: 1,
            };
            let hdr = CtrlHeader {
                flags: if k + 1 == per_kick { 1 } else { 0 },
                fence_id: i,
                ..Default::default()
            };
            reqs.push((f.encode(hdr), 24));
        }
        for r in g.batch(QueueKind::Control, &reqs) {
            assert_eq!(r[0..4], ctrl::RESP_OK_NODATA.to_le_bytes());
        }
    });
    let updates = n * per_kick;
    println!(
        "text cells 64x16 on 1920x1080, {per_kick:>2} per kick (fenced): {:9.0} updates/s ({:.1} µs/update)",
        updates as f64 / secs,
        1e6 * secs / updates as f64
    );
    assert_eq!(g.dev.stats().total_errors(), 0);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep it short then.
    // `cargo bench` passes --bench; `cargo test --benches/--all-targets` passes nothing: then
    // run every case briefly as a smoke test (numbers printed but not meaningful).
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        SMOKE.store(true, std::sync::atomic::Ordering::Relaxed);
        println!("smoke run (cargo test): timings below are not measurements");
    }
    let mut be = WgpuBackend::new();
    if let Err(e) = be.init() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let info = be.adapter_info().expect("adapter");
    println!(
        "adapter: {} ({:?}, {:?}, driver {} {}); {} cpus; {}",
        info.name,
        info.backend,
        info.device_type,
        info.driver,
        info.driver_info,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "DEBUG build"
        } else {
            "release build"
        }
    );
    // VIRTIO_GPU_BENCH_ONLY=1080p|4k|text|text60... runs only the matching cases.
    let only = std::env::var("VIRTIO_GPU_BENCH_ONLY").unwrap_or_default();
    let want = |name: &str| name.starts_with(only.as_str());
    if want("1080p") {
        full_frames(&be, 1920, 1080);
    }
    if want("4k") {
        full_frames(&be, 3840, 2160);
    }
    for per_kick in [1, 8, 60] {
        if want(&format!("text{per_kick}")) {
            text_cells(&be, per_kick);
        }
    }
}
