//! cprkit's suite: the case file format, the trial matrix built from the
//! cases, the trial runner ([`runner`]), the known-violation lists
//! ([`known`]) and random fault schedules ([`fuzz`]).
//!
//! A *case* says what to hand over (a [`Profile`] and the guest's state) and under
//! which faults (its fault points). The conformance runner crosses every case
//! with every VMM adapter and every point of the case: each cell is a *trial*,
//! named by a [`TrialId`] such as
//! `refvmm::memory-running/kill-target@cpr-save`.
//!
//! # The case file format
//!
//! A case is one TOML file; its name is the file stem
//! (`cases/memory-running.toml` is the case `memory-running`). Case files are
//! found recursively under the cases directory ([`cases_dir`]), which holds
//! only case data: every `*.toml` under it is a case (hidden directories
//! aside), and case names must be unique across the tree. [`load_dir`]
//! returns the cases sorted by name. The keys, their values and what each
//! means are documented once, in docs/writing-a-case.md; [`Case`] is their
//! parser.
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
pub mod fuzz;
mod glob;
pub mod known;
mod locations;
mod profile;
pub mod repeat;
pub mod runner;
pub mod snapshot_files;
mod trial_id;

pub use case::{Case, DEFAULT_SETTLE_MS, SETTLE_MS_RANGE};
pub use dir::load_dir;
pub use error::CaseError;
pub use glob::glob_match;
pub use locations::{cases_dir, snapshots_dir, vmm_snapshots_dir};
pub use profile::{Profile, UnknownProfile};
pub use trial_id::{TrialId, point_name, trials};
