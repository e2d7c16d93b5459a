//! cprkit's reports, for people and for CI.
//!
//! - [`model`]: the report's data, as report.json holds it (schema version 1,
//!   docs/report.schema.json), for `cprkit certify` and `cprkit run --format json`;
//!   built from trial results by [`summaries`], and as a whole by
//!   [`certification`] (`Report::certification`) and [`run_report`] (`Report::run`);
//! - [`markdown`], [`junit`]: report.md and junit.xml from the same data;
//! - [`svg`]: a trial's timeline as a picture, two columns SOURCE and TARGET;
//! - [`bundle`]: the certification bundle directory;
//! - [`figures`]: per-step times and downtime of a trial, from its timeline;
//! - [`host`]: the host a report was made on; [`partition`]: `--partition K/N`;
//! - [`compare`]: what changed from one run report to another (`cprkit
//!   compare`), as JSON (docs/compare.schema.json) and Markdown.

pub mod bundle;
pub mod certification;
pub mod compare;
pub mod figures;
pub mod host;
pub mod junit;
pub mod markdown;
pub mod model;
pub mod partition;
pub mod run_report;
pub mod summaries;
pub mod svg;

#[cfg(test)]
mod testing;

pub use bundle::{safe_name, write_bundle};
pub use figures::{Figure, Figures};
pub use host::Host;
pub use model::{LeakCheck, Report, ReportVerdict, Vmm};
pub use partition::Partition;
