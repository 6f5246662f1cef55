//! [`BackendListing`]: every candidate of every rung with its index, as a value that renders
//! itself (`Display`), so the manager returns it and the caller decides where it goes.

use std::fmt;

use super::Candidate;

/// The candidates of [`UnifiedGpuManager::backends`](super::UnifiedGpuManager::backends)
/// in listing order: `[i]` is what `select_by_index(i)` takes. Its `Display` is the text
/// `print_available_backends` prints: each candidate, available or every reason with its
/// evidence and fix.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendListing(pub Vec<Candidate>);

impl fmt::Display for BackendListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            writeln!(f, "  [{i}] {:<11} {}", c.mode.as_str(), c.describe())?;
            let reasons = c.reasons();
            if reasons.is_empty() {
                writeln!(f, "        available")?;
            }
            for (n, r) in reasons.iter().enumerate() {
                // Every blocker, so fixing the first does not just reveal the next.
                let count = if reasons.len() > 1 {
                    format!(" ({} of {})", n + 1, reasons.len())
                } else {
                    String::new()
                };
                writeln!(f, "        unavailable{count}: {}", r.message)?;
                for e in &r.evidence {
                    writeln!(f, "        evidence: {e}")?;
                }
                if let Some(fix) = &r.remedy {
                    writeln!(f, "        fix: {fix}")?;
                }
            }
        }
        Ok(())
    }
}
