//! Text and JSON for `vm-cli gpu prepare / release / restore` and the holders shown by
//! `gpu list`.

use serde_json::{json, Value};

use super::SCHEMA;
use crate::plan::{OwnerStatus, RestoreOutcome, RestoreReport, UndoReport};
use crate::rungs::passthrough::{GroupHolder, PassthroughError, PassthroughPlan};

/// A plan as text: the steps, then who moves and who stays.
pub(crate) fn plan_text(p: &PassthroughPlan) -> String {
    let mut out = p.plan.to_text();
    for m in &p.moved {
        out.push_str(&format!(
            "  moves: {} ({:?}) from {}\n",
            m.address,
            m.role,
            m.driver.as_deref().unwrap_or("no driver")
        ));
    }
    for (a, role) in &p.left {
        out.push_str(&format!("  stays: {a} ({role:?})\n"));
    }
    out
}

/// A plan as JSON.
pub(crate) fn plan_json(
    p: &PassthroughPlan,
    dry_run: bool,
    journal: Option<&std::path::Path>,
) -> Value {
    json!({
        "schema": SCHEMA,
        "command": "gpu prepare",
        "dry_run": dry_run,
        "device": p.target.to_string(),
        "iommu_group": p.group,
        "moved": p.moved,
        "left": p.left.iter().map(|(a, r)| json!({"address": a.to_string(), "role": r})).collect::<Vec<_>>(),
        "plan": p.plan,
        "journal": journal.map(|j| j.display().to_string()),
    })
}

/// An error as JSON: the message, and the reasons of a refusal.
pub(crate) fn error_json(command: &str, e: &PassthroughError) -> Value {
    let reasons = match e {
        PassthroughError::Refused { reasons, .. } => reasons
            .iter()
            .map(|r| {
                json!({
                    "code": r.code,
                    "message": r.message,
                    "evidence": r.evidence,
                    "remedy": r.remedy,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    json!({
        "schema": SCHEMA,
        "command": command,
        "ok": false,
        "error": e.to_string(),
        "refused": e.is_refusal(),
        "undone_fully": e.undone_fully(),
        "reasons": reasons,
    })
}

/// An undo report as JSON.
pub(crate) fn undo_json(command: &str, r: &UndoReport) -> Value {
    json!({
        "schema": SCHEMA,
        "command": command,
        "ok": r.complete(),
        "undone": r.undone,
        "already_undone": r.skipped,
        "left": r.leftovers(),
        "journal_kept": r.journal_kept.as_ref().map(|p| p.display().to_string()),
    })
}

/// `, 2 already undone by hand (skipped)` when some undo steps already held.
pub(crate) fn skipped_text(r: &UndoReport) -> String {
    if r.skipped.is_empty() {
        String::new()
    } else {
        format!(", {} already undone by hand (skipped)", r.skipped.len())
    }
}

/// `gpu restore` as text.
pub(crate) fn restore_text(r: &RestoreReport) -> String {
    if r.outcomes.is_empty() {
        return "no journals: nothing to restore\n".into();
    }
    let mut out = String::new();
    for o in &r.outcomes {
        match o {
            RestoreOutcome::Restored { journal, report } => {
                out.push_str(&format!(
                    "{}: {} (owner pid {} {}): {} step(s) undone{}{}\n",
                    journal.key,
                    journal.subject,
                    journal.owner.pid,
                    journal.owner.program,
                    report.undone.len(),
                    skipped_text(report),
                    if report.complete() {
                        ", host as it was".to_string()
                    } else {
                        format!("; left:\n    {}", report.leftovers().join("\n    "))
                    }
                ));
            }
            RestoreOutcome::Skipped { journal, why } => {
                out.push_str(&format!("{}: left alone: {why}\n", journal.key));
            }
            RestoreOutcome::Refused { journal, why } => {
                out.push_str(&format!("{}: {why}\n", journal.path().display()));
            }
            RestoreOutcome::Error { path, message } => {
                out.push_str(&format!("{}: {message}\n", path.display()));
            }
        }
    }
    out
}

/// `gpu restore` as JSON.
pub(crate) fn restore_json(r: &RestoreReport) -> Value {
    let items: Vec<Value> = r
        .outcomes
        .iter()
        .map(|o| match o {
            RestoreOutcome::Restored { journal, report } => json!({
                "key": journal.key,
                "subject": journal.subject,
                "owner": journal.owner,
                "action": "restored",
                "complete": report.complete(),
                "undone": report.undone.len(),
                "already_undone": report.skipped.len(),
                "left": report.leftovers(),
            }),
            RestoreOutcome::Skipped { journal, why } => json!({
                "key": journal.key,
                "owner": journal.owner,
                "action": "skipped",
                "why": why,
            }),
            RestoreOutcome::Refused { journal, why } => json!({
                "key": journal.key,
                "journal": journal.path().display().to_string(),
                "host": journal.host,
                "action": "refused",
                "why": why,
            }),
            RestoreOutcome::Error { path, message } => json!({
                "journal": path.display().to_string(),
                "action": "error",
                "error": message,
            }),
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "command": "gpu restore",
        "ok": r.complete(),
        "journals": items,
    })
}

/// Holders of prepared groups, one line each, for `gpu list`.
pub(crate) fn holders_text(h: &[GroupHolder]) -> String {
    if h.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nPrepared for passthrough:\n");
    for g in h {
        let who = match (g.locked, g.owner_status, g.detached) {
            (true, _, _) => format!("held by pid {} ({})", g.owner.pid, g.owner.program),
            (false, _, true) => format!(
                "prepared by `{}` (pid {}, exited); give back with `vm-cli gpu release`",
                g.owner.program, g.owner.pid
            ),
            (false, OwnerStatus::Dead, false) => format!(
                "stale: owner pid {} ({}) is gone; `vm-cli gpu restore` reclaims it",
                g.owner.pid, g.owner.program
            ),
            (false, OwnerStatus::Alive, false) => format!(
                "owner pid {} ({}) alive but not holding the lock",
                g.owner.pid, g.owner.program
            ),
        };
        out.push_str(&format!("  {}: {} — {who}\n", g.key, g.subject));
    }
    out
}

/// Holders as JSON values.
pub(crate) fn holders_json(h: &[GroupHolder]) -> Value {
    json!(h
        .iter()
        .map(|g| json!({
            "key": g.key,
            "subject": g.subject,
            "owner": g.owner,
            "owner_status": g.owner_status,
            "locked": g.locked,
            "detached": g.detached,
            "state": g.state,
            "stale": g.stale(),
            "journal": g.journal.display().to_string(),
        }))
        .collect::<Vec<_>>())
}
