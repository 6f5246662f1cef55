//! Selection: priority, preference and fallback as a pure function.

use super::{Candidate, GpuMode};

/// How to choose among the rungs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    /// The rung to try first (`None`: the highest, passthrough).
    pub preferred: Option<GpuMode>,
    /// Go down the ladder when the preferred rung has nothing available.
    pub auto_fallback: bool,
}

impl Default for Preference {
    fn default() -> Self {
        Self {
            preferred: None,
            auto_fallback: true,
        }
    }
}

impl Preference {
    /// The rungs to try, in order: the preferred one, then (with fallback) the ones below it.
    /// Never a rung above the preferred one.
    pub fn rungs(&self) -> Vec<GpuMode> {
        let start = self.preferred.unwrap_or(GpuMode::Passthrough);
        if self.auto_fallback {
            GpuMode::LADDER
                .iter()
                .copied()
                .filter(|m| m.rank() >= start.rank())
                .collect()
        } else {
            vec![start]
        }
    }
}

/// The outcome: what was chosen (if anything) and everything passed over, with reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The chosen candidate.
    pub selected: Option<Candidate>,
    /// Unavailable candidates of the rungs considered before (and including) the chosen one.
    pub rejected: Vec<Candidate>,
    /// The rungs that were looked at, in order.
    pub considered: Vec<GpuMode>,
}

/// Walks the rungs of `pref` in order, asking `candidates` for each (lazily: a rung below
/// the chosen one is never probed), and picks the first available candidate.
pub fn decide(
    pref: &Preference,
    mut candidates: impl FnMut(GpuMode) -> Vec<Candidate>,
) -> Decision {
    let mut rejected = Vec::new();
    let mut considered = Vec::new();
    for mode in pref.rungs() {
        considered.push(mode);
        let list = candidates(mode);
        let mut chosen = None;
        for c in list {
            if c.mode != mode {
                continue;
            }
            if chosen.is_none() && c.is_available() {
                chosen = Some(c);
            } else if !c.is_available() {
                rejected.push(c);
            }
        }
        if chosen.is_some() {
            return Decision {
                selected: chosen,
                rejected,
                considered,
            };
        }
    }
    Decision {
        selected: None,
        rejected,
        considered,
    }
}
