//! Trial names (`VMM::CASE/POINT`) and the trial matrix of one VMM.

use std::fmt;

use cprkit_harness::plan::FaultPoint;

use crate::Case;

/// The name of a point: `no-fault` or `FAULT@STEP` (`kill-target@cpr-save`).
pub fn point_name(p: Option<FaultPoint>) -> String {
    match p {
        None => "no-fault".to_string(),
        Some(p) => p.to_string(),
    }
}

/// The name of a point at a hop: as [`point_name`], with `#N` for a hop
/// after the first (`kill-target@cpr-save#2`).
pub fn hop_point_name(p: Option<FaultPoint>, hop: u32) -> String {
    if hop > 1 {
        format!("{}#{hop}", point_name(p))
    } else {
        point_name(p)
    }
}

/// One trial: a VMM (adapter name, possibly with a variant such as
/// `refvmm:legacy-stop-order`), a case and one of its points.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialId {
    pub vmm: String,
    pub case: String,
    pub point: Option<FaultPoint>,
    /// The hop the fault is injected at (1 unless the case makes several
    /// handovers in a row and the point says `#N`).
    pub hop: u32,
}

impl TrialId {
    /// `{vmm}::{case}/{point}`, e.g. `refvmm::memory-running/kill-target@cpr-save`
    /// (`.../kill-target@cpr-save#2` at the second hop).
    pub fn name(&self) -> String {
        format!(
            "{}::{}/{}",
            self.vmm,
            self.case,
            hop_point_name(self.point, self.hop)
        )
    }

    /// The point's part of the name (`kill-target@cpr-save#2`).
    pub fn point_name(&self) -> String {
        hop_point_name(self.point, self.hop)
    }

    /// The inverse of [`TrialId::name`]; `None` if `s` is not a trial name.
    pub fn parse(s: &str) -> Option<TrialId> {
        let (head, point) = s.rsplit_once('/')?;
        // Case names have no `:`, so the last `::` ends the VMM.
        let (vmm, case) = head.rsplit_once("::")?;
        if vmm.is_empty() || case.is_empty() || case.contains(':') {
            return None;
        }
        let (point, hop) = match point.rsplit_once('#') {
            Some((p, n)) => (p, n.parse::<u32>().ok().filter(|n| *n > 1)?),
            None => (point, 1),
        };
        let point = match point {
            "no-fault" => None,
            p => Some(p.parse().ok()?),
        };
        Some(TrialId {
            vmm: vmm.to_string(),
            case: case.to_string(),
            point,
            hop,
        })
    }
}

impl fmt::Display for TrialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The trial matrix of one VMM: every point of every case, in case order then
/// point order.
pub fn trials<'c>(vmm: &str, cases: &'c [Case]) -> Vec<(TrialId, &'c Case)> {
    cases
        .iter()
        .flat_map(|case| {
            case.points
                .iter()
                .zip(&case.point_hops)
                .map(move |(&point, &hop)| {
                    (
                        TrialId {
                            vmm: vmm.to_string(),
                            case: case.name.clone(),
                            point,
                            hop,
                        },
                        case,
                    )
                })
        })
        .collect()
}
