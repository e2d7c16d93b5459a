//! Drawing a trial's schedule from its seed: the case, one to K faults at
//! points the case plans (several steps, both sides), channel holds and a
//! device delay of random length, and the guest's state.
//!
//! The draw uses ChaCha8 seeded with the trial's seed and takes numbers from it
//! by a fixed recipe (`next_u64() % n`), so a seed draws the same schedule on
//! every machine and in every version that keeps this recipe. The case is
//! chosen from the seed apart from the rest: a replay restricted to the one
//! case (`--case C --replay SEED`) draws the same schedule.

use std::time::Duration;

use cprkit_harness::plan::{DEVICE_DELAY, Fault, FaultPoint, GuestState};
use cprkit_harness::schedule::{ChannelHold, HOLD_STEPS, Schedule};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// One trial in this many draws no fault (the case's no-fault point).
pub const FAULT_FREE: u64 = 4;
/// The longest channel hold a draw makes.
pub const MAX_HOLD_MS: u64 = 150;
/// The longest device delay a draw makes.
pub const MAX_DEVICE_DELAY_MS: u64 = 400;

/// A case a fuzz run can draw, with the fault points the VMM plans for it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub case: String,
    pub points: Vec<FaultPoint>,
}

/// One fuzz trial: what its seed drew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    pub seed: u64,
    pub case: String,
    pub guest: GuestState,
    pub schedule: Schedule,
}

/// The seed of trial `i` of a run seeded `run_seed` (splitmix64: the trials'
/// seeds are spread over the whole range, each printed as the trial's own).
pub fn trial_seed(run_seed: u64, i: u64) -> u64 {
    let mut z = run_seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    if n == 0 { 0 } else { rng.next_u64() % n }
}

/// Draws the trial of `seed` among `cases` (not empty), with at most
/// `max_faults` faults (at least 1).
pub fn draw(seed: u64, cases: &[Candidate], max_faults: usize) -> Drawn {
    assert!(!cases.is_empty(), "no case to draw from");
    // The case from its own stream; the schedule from the seed's.
    let mut pick = ChaCha8Rng::seed_from_u64(seed);
    pick.set_stream(1);
    let case = &cases[below(&mut pick, cases.len() as u64) as usize];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let guest = if below(&mut rng, 2) == 0 {
        GuestState::Running
    } else {
        GuestState::Paused
    };
    // One trial in FAULT_FREE draws the case's no-fault point: the handover
    // under the drawn timing alone (a bug of the completed handover shows
    // only there); the others one to K faults.
    let fault_free = below(&mut rng, FAULT_FREE) == 0;
    let want = if fault_free {
        0
    } else {
        1 + below(&mut rng, max_faults.max(1) as u64) as usize
    };
    // Candidate points in a seeded order; each taken if the schedule stays
    // possible (one kit and one device fault a step, one cancel, a bad
    // request alone).
    let mut order = case.points.clone();
    for i in (1..order.len()).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let delay = Duration::from_millis(20 + below(&mut rng, MAX_DEVICE_DELAY_MS - 19));
    let mut holds = Vec::new();
    for step in HOLD_STEPS {
        if below(&mut rng, 3) == 0 {
            holds.push(ChannelHold {
                step,
                ms: 1 + below(&mut rng, MAX_HOLD_MS),
            });
        }
    }
    let mut faults: Vec<FaultPoint> = Vec::new();
    for p in order {
        if faults.len() == want {
            break;
        }
        let mut next = faults.clone();
        next.push(p);
        if Schedule::new(next.clone(), Vec::new(), delay).is_ok() {
            faults = next;
        }
    }
    // A delay without a device-delay means nothing: the standard one.
    let delay = if faults.iter().any(|p| p.fault == Fault::DeviceDelay) {
        delay
    } else {
        DEVICE_DELAY
    };
    let schedule = Schedule::new(faults, holds, delay).expect("every part checked");
    Drawn {
        seed,
        case: case.case.clone(),
        guest,
        schedule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases() -> Vec<Candidate> {
        vec![
            Candidate {
                case: "memory-running".into(),
                points: FaultPoint::matrix(false),
            },
            Candidate {
                case: "vhost-user-blk".into(),
                points: FaultPoint::matrix(true),
            },
        ]
    }

    #[test]
    fn a_seed_draws_the_same_trial_every_time() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(draw(seed, &cases(), 3), draw(seed, &cases(), 3));
        }
    }

    #[test]
    fn the_recipe_is_stable() {
        // A change here changes every printed seed's schedule: keep the recipe.
        let d = draw(7, &cases(), 3);
        assert_eq!(
            (d.case.as_str(), d.guest, d.schedule.to_string()),
            (
                "vhost-user-blk",
                GuestState::Paused,
                "device-delay@release-owner;hold=target-resume:16;delay=235".to_string()
            )
        );
    }

    #[test]
    fn a_replay_restricted_to_its_case_draws_the_same_schedule() {
        for seed in 0..50 {
            let d = draw(seed, &cases(), 3);
            let only: Vec<Candidate> = cases().into_iter().filter(|c| c.case == d.case).collect();
            assert_eq!(draw(seed, &only, 3), d, "seed {seed}");
        }
    }

    #[test]
    fn draws_stay_within_the_case_and_the_bound() {
        let mut several = 0;
        let mut fault_free = 0;
        let mut both_sides = false;
        for i in 0..300 {
            let d = draw(trial_seed(99, i), &cases(), 3);
            let n = d.schedule.faults.len();
            assert!(n <= 3, "{n}");
            fault_free += usize::from(n == 0);
            several += usize::from(n > 1);
            let case = cases().into_iter().find(|c| c.case == d.case).unwrap();
            for p in &d.schedule.faults {
                assert!(case.points.contains(p), "{p} not of {}", d.case);
            }
            let f: Vec<Fault> = d.schedule.faults.iter().map(|p| p.fault).collect();
            both_sides |= f.contains(&Fault::KillSource) && f.contains(&Fault::KillTarget);
            for h in &d.schedule.holds {
                assert!(h.ms <= MAX_HOLD_MS);
            }
        }
        assert!(several > 100, "{several} of 300 draws had several faults");
        assert!(
            (50..=100).contains(&fault_free),
            "{fault_free} of 300 draws were fault-free"
        );
        assert!(both_sides, "no draw hit both sides");
    }

    #[test]
    fn trial_seeds_differ() {
        let seeds: std::collections::BTreeSet<u64> = (0..1000).map(|i| trial_seed(1, i)).collect();
        assert_eq!(seeds.len(), 1000);
    }
}
