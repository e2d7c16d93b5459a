//! ORD-1's watch with a guest that writes slowly: refvmm's guest pausing
//! 50 ms between two writes (`$CPRKIT_REFVMM_GUEST_STEP_US`), where a fixed
//! 20 ms watch would miss a source that runs on while the fds cross more
//! often than not. The kit measures the guest's write rate before the migrate and
//! watches for 50 of its writes: the mutant whose source runs on
//! (legacy-stop-order) is still caught by its counter, and the correct
//! refvmm's still counter was watched that long.

use std::path::Path;

use serde_json::Value;

mod support;
use support::cprkit;

/// The guest's step, in microseconds.
const STEP_US: u64 = 50_000;
/// The watch's ceiling: the trial's settle bound.
const CEILING_MS: f64 = 1000.0;

/// ORD-1's verdict in `vmm`'s memory-running/no-fault trial, the guest slowed.
fn ord1(vmm: &str) -> Value {
    let step = STEP_US.to_string();
    let o = cprkit(
        &[
            "run",
            "--vmm",
            vmm,
            "--case",
            &format!("{vmm}::memory-running/no-fault"),
            "--format",
            "json",
        ],
        &[("CPRKIT_REFVMM_GUEST_STEP_US", Path::new(&step))],
    );
    let json: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let trials = json["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 1, "{json}");
    trials[0]["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|v| v["rule"] == "ORD-1")
        .expect("ORD-1 judged")
        .clone()
}

/// The bound the detail says was watched, in ms (`watched up to N ms`).
fn watched_ms(v: &Value) -> f64 {
    let detail = v["detail"].as_str().expect("a detail");
    let after = detail
        .split_once("watched up to ")
        .unwrap_or_else(|| panic!("no bound in {detail:?}"))
        .1;
    after.split_once(" ms").expect("ms").0.parse().unwrap()
}

#[test]
fn a_source_that_runs_on_with_a_slow_guest_is_caught_by_its_counter() {
    let v = ord1("refvmm:legacy-stop-order");
    assert_eq!(v["status"], "fail", "{v}");
    let evidence = v["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("the guest counter moved while the fds were held"),
        "{v}"
    );
    // The bound is derived from the slow guest's rate, far above 20 ms.
    assert!(watched_ms(&v) >= 100.0, "{v}");
}

#[test]
fn a_slow_guest_that_stops_is_watched_for_fifty_of_its_writes() {
    let v = ord1("refvmm");
    assert_eq!(v["status"], "pass", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("50 guest writes of"), "{v}");
    // 50 writes of at least the guest's step (its writes take longer, never
    // less), up to the settle ceiling.
    let least = (50.0 * STEP_US as f64 / 1000.0).min(CEILING_MS);
    let ms = watched_ms(&v);
    assert!((least..=CEILING_MS).contains(&ms), "{ms} ms: {v}");
}
