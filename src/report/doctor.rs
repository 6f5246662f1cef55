//! `vm-cli gpu doctor`: the checks as text (one per line, grouped by rung) and JSON.

use serde_json::{json, Value};

use super::{human_bytes, SCHEMA};
use crate::doctor::{Options, Report, Status};
use crate::ladder::GpuMode;

fn group_name(rung: Option<GpuMode>) -> &'static str {
    match rung {
        None => "Host (every rung)",
        Some(GpuMode::Passthrough) => "Passthrough (VFIO)",
        Some(GpuMode::Mdev) => "Mediated (mdev, SR-IOV, vGPU)",
        Some(GpuMode::Wgpu) => "wgpu (virtio-gpu)",
    }
}

fn wanted(r: &Report) -> String {
    match r.wanted {
        Some(m) => format!("--gpu-mode {m}"),
        None => "any rung".into(),
    }
}

/// The text report.
pub fn doctor_text(r: &Report, opts: &Options) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "vm-cli gpu doctor: {}{}, guest memory {}\n",
        wanted(r),
        opts.device
            .map(|d| format!(", --gpu-device {d}"))
            .unwrap_or_default(),
        human_bytes(opts.memory_bytes)
    ));
    let width = r.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut current: Option<Option<GpuMode>> = None;
    for c in &r.checks {
        if current != Some(c.rung) {
            current = Some(c.rung);
            s.push_str(&format!("\n{}\n", group_name(c.rung)));
        }
        s.push_str(&format!(
            "  {:<4}  {:<width$}  {}\n",
            c.status.as_str(),
            c.id,
            c.title
        ));
        for e in &c.evidence {
            s.push_str(&format!("        looked at: {e}\n"));
        }
        if let Some(fix) = &c.remedy {
            for (i, l) in fix.lines().enumerate() {
                let lead = if i == 0 { "fix:" } else { "    " };
                s.push_str(&format!("        {lead} {l}\n"));
            }
        }
    }
    s.push_str("\nVerdict\n");
    for v in &r.rungs {
        s.push_str(&format!(
            "  {:<11}  {}\n",
            v.rung.as_str(),
            match &v.with {
                Some(w) => format!("ready: {w}"),
                None => "not ready".into(),
            }
        ));
    }
    s.push_str(&format!(
        "  {} ok, {} warn, {} fail; {}: {}\n",
        r.count(Status::Ok),
        r.count(Status::Warn),
        r.count(Status::Fail),
        wanted(r),
        if r.ready { "ready" } else { "not ready" }
    ));
    s
}

/// The JSON report (schema 1).
pub fn doctor_json(r: &Report, opts: &Options) -> Value {
    json!({
        "schema": SCHEMA,
        "request": {
            "gpu_mode": r.wanted.map(|m| m.as_str()).unwrap_or("auto"),
            "gpu_device": opts.device,
            "memory_bytes": opts.memory_bytes,
            "wgpu_backend": opts.wgpu_backend,
        },
        "ready": r.ready,
        "rungs": r.rungs,
        "summary": {
            "ok": r.count(Status::Ok),
            "warn": r.count(Status::Warn),
            "fail": r.count(Status::Fail),
        },
        "checks": r.checks,
    })
}
