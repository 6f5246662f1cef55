//! `cargo xtask bench`: speed of the whole `vm-cli` process against a peer measured in the
//! same run, on a generated host of 1,024 PCI functions with 16 GPUs × 32 mdev types.
//!
//! Prints medians and ratios; targets are stated next to them. Nothing here asserts on time
//! (the machine may be loaded): read the ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{bench_host, BenchParams};
use crate::sim::{build_vm_cli, repo_root};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `cmd` `n` times (after one warm-up run) and returns the median wall time.
fn time(n: usize, mut make: impl FnMut() -> Command) -> Result<Duration, String> {
    let mut runs = Vec::with_capacity(n);
    for i in 0..=n {
        let mut c = make();
        let t = Instant::now();
        let st = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {c:?}: {e}"))?;
        let dt = t.elapsed();
        if !st.success() && st.code() != Some(3) {
            return Err(format!("{c:?} failed: {st}"));
        }
        if i > 0 {
            runs.push(dt);
        }
    }
    Ok(median(runs))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `cargo xtask bench [--runs N] [--debug] [--display-secs N]`: the scan bench, then
/// `bench-display` (skipped with `--display-secs 0`; its failure is printed, not fatal).
pub fn bench_cmd(args: &[String]) -> Result<(), String> {
    let mut runs = 15;
    let mut release = true;
    let mut display_secs = 5u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--runs needs a number")?
            }
            "--debug" => release = false,
            "--display-secs" => {
                display_secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--display-secs needs a number of seconds (0 skips the display bench)")?
            }
            other => {
                return Err(format!(
                    "unknown option {other:?}; usage: bench [--runs N] [--debug] [--display-secs N]"
                ))
            }
        }
    }
    let host: PathBuf = repo_root().join("target/bench-host-1024");
    if !host.join(".fixture/README").exists() {
        let p = BenchParams {
            functions: 1024,
            gpus: 16,
            mdev_types: 32,
        };
        bench_host(p)
            .and_then(|h| h.write(&host))
            .map_err(|e| e.to_string())?;
    }
    let cli = build_vm_cli(release)?;
    let lspci = which("lspci").ok_or("lspci not found: apt-get install pciutils")?;
    println!(
        "host: {} (1,024 PCI functions, 16 GPUs x 32 mdev types); vm-cli {} build; median of {runs} runs",
        host.display(),
        if release { "release" } else { "debug" }
    );

    let sysfs = format!("sysfs.path={}/sys/bus/pci", host.display());
    let peer = time(runs, || {
        let mut c = Command::new(&lspci);
        c.args(["-A", "linux-sysfs", "-O", &sysfs, "-nnk", "-vmm"]);
        c
    })?;
    let list = time(runs, || vm_cli(&cli, &host, &["gpu", "list", "--json"]))?;
    let plan = time(runs, || {
        vm_cli(
            &cli,
            &host,
            &[
                "--kernel",
                "k",
                "--gpu-mode",
                "passthrough",
                "--dry-run",
                "--json",
            ],
        )
    })?;
    let ratio = |a: Duration| a.as_secs_f64() / peer.as_secs_f64();
    println!(
        "  lspci -nnk -vmm (peer)                         {:>10}",
        ms(peer)
    );
    println!(
        "  vm-cli gpu list --json                         {:>10}  {:.2}x lspci  (target <= 1.00x)",
        ms(list),
        ratio(list)
    );
    println!(
        "  vm-cli --dry-run --gpu-mode passthrough --json {:>10}  {:.2}x lspci  (no wgpu instance: tests/host_access.rs)",
        ms(plan),
        ratio(plan)
    );
    tuning_bench(&cli, runs, p_default())?;
    // The node agent (issue 18): start to first ListAndWatch, Allocate latency.
    let st = Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args(["bench", "-p", "vm-device-agent", "--bench", "agent"])
        .env("VM_BENCH_HOST", &host)
        .status()
        .map_err(|e| format!("cannot run the node agent bench: {e}"))?;
    if !st.success() {
        println!("node agent bench did not complete: {st}");
    }
    if display_secs > 0 {
        // Its own builds, downloads and guests can fail on a host that has the scan bench's
        // tools only; say why and keep the scan numbers.
        let args = [
            "--secs".to_string(),
            display_secs.to_string(),
            "--vm-cli".to_string(),
            cli.display().to_string(),
        ];
        if let Err(e) = crate::kernel_test::bench_display::run(&args) {
            println!("display bench did not complete: {e}");
        }
    }
    Ok(())
}

fn p_default() -> BenchParams {
    BenchParams {
        functions: 1024,
        gpus: 16,
        mdev_types: 32,
    }
}

/// Issue 17's extra launch-plan cost: the same 1,024-function host with two NUMA nodes (its
/// GPUs alternate between them), 2 MiB pages free on node 0 only. Today's plan (`--numa
/// off`) against the tuned one (`--numa auto`: the GPU's node, its `local_cpulist`, the
/// online CPUs; with `--hugepages 2M --reserve-hugepages`: the node's pool and the
/// reservation plan), for a GPU on node 1. Pinning itself happens after QEMU starts (one QMP
/// `query-cpus-fast` and one `sched_setaffinity` per thread) and is not in the plan.
fn tuning_bench(cli: &Path, runs: usize, p: BenchParams) -> Result<(), String> {
    use crate::hostgen::{HugePool, NumaNode};
    let host: PathBuf = repo_root().join("target/bench-host-1024-numa");
    if !host.join(".fixture/hugepages.json").exists() {
        let mut h = bench_host(p).map_err(|e| e.to_string())?;
        for (id, cpus, free) in [(0, "0-31", 4096), (1, "32-63", 0)] {
            h.numa_node(NumaNode {
                id,
                cpus: cpus.into(),
                mem_total_mib: 256 << 10,
                mem_free_mib: 200 << 10,
                pools: vec![HugePool {
                    size_kib: 2048,
                    nr: free,
                    free,
                    limit: None,
                }],
            });
        }
        h.write(&host).map_err(|e| e.to_string())?;
    }
    // GPU 1 (bus 02) is on node 1.
    let base = [
        "--kernel",
        "k",
        "--gpu-mode",
        "passthrough",
        "--gpu-device",
        "0000:02:00.0",
        "--print-cmdline",
        "--json",
        "--qemu",
        "/bin/true",
    ];
    let with = |extra: &'static [&'static str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let qemu = fake_qemu()?;
    let configs: Vec<Vec<String>> = [
        with(&["--numa", "off"]),
        with(&["--numa", "auto"]),
        with(&["--numa", "auto", "--hugepages", "2M", "--reserve-hugepages"]),
    ]
    .into_iter()
    .map(|args| {
        args.iter()
            .map(|a| {
                if *a == "/bin/true" {
                    qemu.display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect()
    })
    .collect();
    // Interleaved (A B C A B C …), so a load that drifts during the run weighs on all three
    // alike; a run that is not a success (or exit 3) is an error.
    let mut runs_of: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    for i in 0..=runs {
        for (k, args) in configs.iter().enumerate() {
            let t = Instant::now();
            let st = Command::new(cli)
                .arg("--host-root")
                .arg(&host)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
            let dt = t.elapsed();
            if !st.success() {
                return Err(format!("vm-cli {} failed: {st}", args.join(" ")));
            }
            if i > 0 {
                runs_of[k].push(dt);
            }
        }
    }
    let mut medians = runs_of.into_iter().map(median);
    let (plain, numa, huge) = (
        medians.next().unwrap_or_default(),
        medians.next().unwrap_or_default(),
        medians.next().unwrap_or_default(),
    );
    let r = |d: Duration| d.as_secs_f64() / plain.as_secs_f64();
    println!("launch plan on {} (2 NUMA nodes):", host.display());
    println!(
        "  --print-cmdline --numa off (today's plan)      {:>10}",
        ms(plain)
    );
    println!(
        "  --numa auto (node, local_cpulist, online CPUs) {:>10}  {:.2}x today's plan  (target <= 1.05x)",
        ms(numa),
        r(numa)
    );
    println!(
        "  + --hugepages 2M --reserve-hugepages           {:>10}  {:.2}x today's plan  (target <= 1.05x)",
        ms(huge),
        r(huge)
    );
    Ok(())
}

/// A stand-in QEMU for `--print-cmdline`: it only answers `--version`.
fn fake_qemu() -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = repo_root().join("target/bench-fake-qemu");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let path = dir.join("qemu-system-x86_64");
    std::fs::write(
        &path,
        "#!/bin/sh\necho 'QEMU emulator version 10.0.2 (bench stand-in)'\n",
    )
    .map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(path)
}

fn vm_cli(cli: &Path, host: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(cli);
    c.arg("--host-root").arg(host).args(args);
    c
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
