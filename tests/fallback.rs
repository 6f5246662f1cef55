//! Properties of the ladder: priority, preference, fallback, and availability.

use proptest::prelude::*;
use vm_device::gpu_manager::{decide, Candidate, GpuMode, Preference, Reason, ReasonCode, Target};
use vm_device_host::PciAddress;

fn cand(mode: GpuMode, i: u8, available: bool) -> Candidate {
    let target = Target::Gpu {
        address: PciAddress::new(0, i, 0, 0).unwrap(),
        companions: vec![],
    };
    if available {
        Candidate::available(mode, target)
    } else {
        Candidate::unavailable(mode, target, Reason::new(ReasonCode::BootDisplay, "no"))
    }
}

/// Per rung: a list of availability flags.
fn ladder() -> impl Strategy<Value = [Vec<bool>; 3]> {
    let rung = || prop::collection::vec(any::<bool>(), 0..4);
    (rung(), rung(), rung()).prop_map(|(a, b, c)| [a, b, c])
}

fn mode_strategy() -> impl Strategy<Value = Option<GpuMode>> {
    prop::option::of(prop::sample::select(GpuMode::LADDER.to_vec()))
}

fn candidates(l: &[Vec<bool>; 3], mode: GpuMode) -> Vec<Candidate> {
    l[mode.rank()]
        .iter()
        .enumerate()
        .map(|(i, a)| cand(mode, i as u8, *a))
        .collect()
}

proptest! {
    #[test]
    fn fallback_picks_the_highest_available_rung_at_or_below_the_preferred_one(
        l in ladder(), preferred in mode_strategy()
    ) {
        let pref = Preference { preferred, auto_fallback: true };
        let d = decide(&pref, |m| candidates(&l, m));
        let start = preferred.unwrap_or(GpuMode::Passthrough).rank();
        let expected = (start..3).find(|r| l[*r].iter().any(|a| *a));
        prop_assert_eq!(d.selected.as_ref().map(|c| c.mode.rank()), expected);
        if let Some(c) = &d.selected {
            prop_assert!(c.mode.rank() >= start, "never up the ladder");
            // The first available candidate of that rung, in listing order.
            let first = l[c.mode.rank()].iter().position(|a| *a).unwrap();
            prop_assert_eq!(c, &cand(c.mode, first as u8, true));
        }
    }

    #[test]
    fn an_unavailable_candidate_is_never_selected(l in ladder(), preferred in mode_strategy(), fb in any::<bool>()) {
        let pref = Preference { preferred, auto_fallback: fb };
        let d = decide(&pref, |m| candidates(&l, m));
        if let Some(c) = &d.selected {
            prop_assert!(c.is_available());
        }
        prop_assert!(d.rejected.iter().all(|c| !c.is_available() && c.reason().is_some()));
    }

    #[test]
    fn fallback_off_means_the_preferred_rung_or_an_error_with_every_reason(
        l in ladder(), preferred in mode_strategy()
    ) {
        let pref = Preference { preferred, auto_fallback: false };
        let want = preferred.unwrap_or(GpuMode::Passthrough);
        let d = decide(&pref, |m| candidates(&l, m));
        prop_assert_eq!(d.considered.clone(), vec![want]);
        match &d.selected {
            Some(c) => prop_assert_eq!(c.mode, want),
            None => {
                let unavailable = l[want.rank()].iter().filter(|a| !**a).count();
                prop_assert_eq!(d.rejected.len(), unavailable);
            }
        }
    }

    #[test]
    fn rungs_below_the_choice_are_never_probed(l in ladder(), preferred in mode_strategy()) {
        let pref = Preference { preferred, auto_fallback: true };
        let mut probed = Vec::new();
        let d = decide(&pref, |m| { probed.push(m); candidates(&l, m) });
        if let Some(c) = &d.selected {
            prop_assert!(probed.iter().all(|m| m.rank() <= c.mode.rank()));
        }
        prop_assert_eq!(probed, d.considered);
    }

    #[test]
    fn the_ranking_is_deterministic(l in ladder(), preferred in mode_strategy(), fb in any::<bool>()) {
        let pref = Preference { preferred, auto_fallback: fb };
        let a = decide(&pref, |m| candidates(&l, m));
        let b = decide(&pref, |m| candidates(&l, m));
        prop_assert_eq!(a, b);
    }
}
