//! Parsing the guest's console: the `KTEST` protocol `/init` speaks (see `guest/init.sh`).

use std::collections::BTreeMap;

/// What one scenario printed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScenarioLog {
    /// `KTEST-OUT NAME LINE` lines, in order, without the prefix.
    pub output: Vec<String>,
    /// `KTEST NAME PASS|FAIL DETAIL`: (passed, detail).
    pub verdict: Option<(bool, String)>,
    /// `KTEST-TIME NAME SECONDS`: guest seconds.
    pub seconds: Option<f64>,
}

/// Everything the guest said in the protocol.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GuestLog {
    /// Guest uptime when `/init` started.
    pub init_uptime: Option<f64>,
    /// Kernel release the guest reported.
    pub kernel: Option<String>,
    /// Guest uptime once drivers and modules were loaded.
    pub ready_uptime: Option<f64>,
    /// `KTEST-SETUP` notes (module loads that failed).
    pub setup_notes: Vec<String>,
    /// Scenarios by name.
    pub scenarios: BTreeMap<String, ScenarioLog>,
    /// Scenario names in the order they began.
    pub order: Vec<String>,
    /// `KTEST-END` seen.
    pub ended: bool,
    /// Guest uptime at `KTEST-END`.
    pub end_uptime: Option<f64>,
}

fn uptime_field(rest: &str) -> Option<f64> {
    rest.split_whitespace()
        .find_map(|w| w.strip_prefix("uptime="))
        .and_then(|v| v.parse().ok())
}

impl GuestLog {
    /// Feeds one console line (a kernel message may precede the marker on the same line).
    pub fn feed(&mut self, raw: &str) {
        let line = raw.trim_end_matches(['\r', '\n']);
        let Some(at) = line.find("KTEST") else { return };
        let line = &line[at..];
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "KTEST-INIT" => {
                self.init_uptime = uptime_field(rest);
                self.kernel = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("kernel="))
                    .map(str::to_string);
            }
            "KTEST-READY" => self.ready_uptime = uptime_field(rest),
            "KTEST-SETUP" => self.setup_notes.push(rest.to_string()),
            "KTEST-END" => {
                self.ended = true;
                self.end_uptime = uptime_field(rest);
            }
            "KTEST-BEGIN" => {
                if let Some(name) = rest.split_whitespace().next() {
                    self.order.push(name.to_string());
                    self.scenarios.entry(name.to_string()).or_default();
                }
            }
            "KTEST-OUT" => {
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                if !name.is_empty() {
                    let s = self.scenarios.entry(name.to_string()).or_default();
                    s.output.push(text.to_string());
                }
            }
            "KTEST-TIME" => {
                let mut w = rest.split_whitespace();
                if let (Some(name), Some(secs)) = (w.next(), w.next()) {
                    if let Ok(v) = secs.parse() {
                        self.scenarios.entry(name.to_string()).or_default().seconds = Some(v);
                    }
                }
            }
            "KTEST" => {
                let mut w = rest.splitn(3, ' ');
                let (Some(name), Some(verdict)) = (w.next(), w.next()) else {
                    return;
                };
                let detail = w.next().unwrap_or("").to_string();
                let passed = match verdict {
                    "PASS" => true,
                    "FAIL" => false,
                    _ => return,
                };
                self.scenarios.entry(name.to_string()).or_default().verdict =
                    Some((passed, detail));
            }
            _ => {}
        }
    }

    /// Parses a whole console log.
    #[cfg(test)]
    pub fn parse(text: &str) -> Self {
        let mut g = Self::default();
        for l in text.lines() {
            g.feed(l);
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol_and_ignores_kernel_noise() {
        let log = "\
[    0.000000] Linux version 6.1.0\r
KTEST-INIT uptime=3.80 kernel=6.1.0-56-amd64\r
KTEST-SETUP modprobe mtty failed: not found
KTEST-READY uptime=5.70
KTEST-BEGIN lab-mdev uptime=5.71
KTEST-OUT lab-mdev ok mdev created
[    6.1] mbochs: something KTEST-OUT lab-mdev ok removed
KTEST lab-mdev PASS mbochs/mbochs-small create + remove
KTEST-TIME lab-mdev 0.42
KTEST-BEGIN record uptime=6.2
KTEST record FAIL vm-cli host record exited 2: unknown command
KTEST-END uptime=7.00
";
        let g = GuestLog::parse(log);
        assert_eq!(g.init_uptime, Some(3.8));
        assert_eq!(g.kernel.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(g.setup_notes.len(), 1);
        assert!(g.ended);
        assert_eq!(g.order, vec!["lab-mdev", "record"]);
        let m = &g.scenarios["lab-mdev"];
        assert_eq!(m.output, vec!["ok mdev created", "ok removed"]);
        assert_eq!(
            m.verdict,
            Some((true, "mbochs/mbochs-small create + remove".into()))
        );
        assert_eq!(m.seconds, Some(0.42));
        let r = &g.scenarios["record"];
        assert_eq!(r.verdict.as_ref().map(|v| v.0), Some(false));
        assert_eq!(r.seconds, None);
    }

    #[test]
    fn a_truncated_log_has_no_end_and_no_verdict() {
        let g = GuestLog::parse("KTEST-BEGIN lab-iommu uptime=5\nKTEST-OUT lab-iommu ok x\n");
        assert!(!g.ended);
        assert_eq!(g.scenarios["lab-iommu"].verdict, None);
    }
}
