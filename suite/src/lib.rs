//! cprkit's case files and the trial matrix built from them.
//!
//! A *case* says what to hand over (a [`Profile`] and the guest's state) and under
//! which faults (its fault points). The conformance runner crosses every case
//! with every VMM adapter and every point of the case: each cell is a *trial*,
//! named by a [`TrialId`] such as
//! `refvmm::memory-running/kill-target@cpr-save`.
//!
//! # The case file format
//!
//! A case is one TOML file. Its name is the file stem
//! (`cases/memory-running.toml` is the case `memory-running`). Case files are
//! found recursively under the cases directory ([`cases_dir`]), so
//! `cases/regressions/*.toml` are cases too; case names must be unique across
//! the whole tree, and [`load_dir`] returns the cases sorted by name.
//!
//! ```toml
//! description = "A running guest handed over with memfd RAM only, under every fault of the profile."
//! profile = "memory"       # required: memory | vhost-user | vhost-kernel
//! guest = "running"        # required: running | paused
//! points = "all"           # required: "all", or a list of "no-fault" and FAULT@STEP
//! settle-ms = 1000         # optional, 50..=60000, default 1000
//! regression = "..."       # optional: the bug this case guards
//! ```
//!
//! | key | required | meaning |
//! |---|---|---|
//! | `description` | no (default empty) | one sentence: what the case hands over and why |
//! | `profile` | yes | `memory` (memfd RAM only), `vhost-user` or `vhost-kernel`; only `memory` is runnable today, the others parse but [`Case::runnable`] says why they do not run |
//! | `guest` | yes | the guest's state when the migrate command comes: `running` or `paused` |
//! | `points` | yes | `"all"`: the fault-free handover, then every [`FaultPoint::all`]; or a list of `"no-fault"` and `FAULT@STEP` strings (`["no-fault", "kill-target@cpr-save"]`), run in the order written |
//! | `settle-ms` | no (default 1000) | the bound, in milliseconds, for the rules that say "within a bounded time"; 50 to 60000 |
//! | `regression` | no | free text: the bug this case guards (for regression cases) |
//!
//! Unknown keys are errors, a point listed twice is an error, and an empty list
//! is an error (a case must run something).
//!
//! Files that are not cases: `Cargo.toml`, and anything under a directory named
//! `src`, `tests` or `target` or whose name starts with `.` (the cases directory
//! is also this crate's directory).
//!
//! # Errors
//!
//! Every malformed case file gives a [`CaseError`] naming the file, the line
//! (1-based) and the field, e.g.
//!
//! ```text
//! cases/bad.toml:4: field `points[2]`: unknown fault `explode` (known: kill-target, ...)
//! cases/bad.toml:3: field `guest`: unknown variant `sleeping`, expected `running` or `paused`
//! ```
//!
//! List elements are numbered from 0. A missing required field is reported at
//! line 1; a TOML syntax error names the file and the line of the error.

mod case;
mod dir;
mod error;
mod glob;
pub mod known;
mod locations;
mod profile;
pub mod runner;
mod trial_id;

pub use case::{Case, DEFAULT_SETTLE_MS, SETTLE_MS_RANGE};
pub use dir::load_dir;
pub use error::CaseError;
pub use glob::glob_match;
pub use locations::{cases_dir, snapshots_dir, vmm_snapshots_dir};
pub use profile::{Profile, UnknownProfile};
pub use trial_id::{TrialId, point_name, trials};
