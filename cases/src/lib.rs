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

pub mod runner;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cprkit_harness::plan::{FaultPoint, GuestState};
use serde::Deserialize;
use serde::de::value::StrDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// What the handed-over VM has besides its memfd RAM (CONTRACT.md, "Profiles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// memfd guest RAM only.
    Memory,
    /// Plus a vhost-user-blk device.
    VhostUser,
    /// Plus /dev/vhost-net or /dev/vhost-vsock.
    VhostKernel,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Memory, Profile::VhostUser, Profile::VhostKernel];

    /// The spelling used in case files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Memory => "memory",
            Profile::VhostUser => "vhost-user",
            Profile::VhostKernel => "vhost-kernel",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`Profile`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile `{0}` (known: memory, vhost-user, vhost-kernel)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProfile(s.into()))
    }
}

/// Why a case file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}: bad TOML: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// A field is missing, unknown, of the wrong type or has a bad value.
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Field {
        file: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    /// The file's stem cannot be a case name.
    #[error("{}: bad case name `{name}`: {message}", file.display())]
    BadName {
        file: PathBuf,
        name: String,
        message: String,
    },
    /// Two case files have the same stem.
    #[error("{}: case `{name}` is already defined by {}", second.display(), first.display())]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl CaseError {
    /// The file the error is about (the second one for a duplicate name).
    pub fn file(&self) -> &Path {
        match self {
            CaseError::Io { path, .. } => path,
            CaseError::Syntax { file, .. }
            | CaseError::Field { file, .. }
            | CaseError::BadName { file, .. } => file,
            CaseError::DuplicateName { second, .. } => second,
        }
    }

    /// The 1-based line, for errors inside a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            CaseError::Syntax { line, .. } | CaseError::Field { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The field, for errors about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            CaseError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// One case: a profile, a guest state and the fault points to run them under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The file stem.
    pub name: String,
    /// The file the case was loaded from.
    pub path: PathBuf,
    pub description: String,
    pub profile: Profile,
    pub guest: GuestState,
    /// The points to run, in order; `None` is the fault-free handover (first when
    /// the file says `"all"`).
    pub points: Vec<Option<FaultPoint>>,
    /// The bound for the "within a bounded time" checks.
    pub settle: Duration,
    /// The bug this case guards, if it is a regression case.
    pub regression: Option<String>,
}

/// The keys a case file may have, in the order the docs list them.
const KEYS: [&str; 6] = [
    "description",
    "profile",
    "guest",
    "points",
    "settle-ms",
    "regression",
];

/// The default of `settle-ms`.
pub const DEFAULT_SETTLE_MS: u64 = 1000;
/// The range `settle-ms` must be in.
pub const SETTLE_MS_RANGE: std::ops::RangeInclusive<u64> = 50..=60000;

impl Case {
    /// Reads and checks one case file; its name is the file stem.
    pub fn load(path: &Path) -> Result<Case, CaseError> {
        let text = std::fs::read_to_string(path).map_err(|source| CaseError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Case::parse(path, &text)
    }

    /// Checks the text of a case file as if read from `path` (which names the
    /// case and is quoted in errors; it is not read).
    pub fn parse(path: &Path, text: &str) -> Result<Case, CaseError> {
        let name = case_name(path)?;
        let src = Source { file: path, text };
        let table = DeTable::parse(text).map_err(|e| CaseError::Syntax {
            file: path.to_path_buf(),
            line: e.span().map_or(1, |s| src.line(s.start)),
            message: e.message().trim_end().to_string(),
        })?;
        let table = table.into_inner();

        // Look at the keys in file order, so the first error reported is the first
        // in the file.
        let mut entries: Vec<(&Spanned<_>, &Spanned<DeValue>)> = table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);

        let mut description = None;
        let mut profile = None;
        let mut guest = None;
        let mut points = None;
        let mut settle_ms = None;
        let mut regression = None;
        for (key, value) in entries {
            let k: &str = key.get_ref();
            match k {
                "description" => description = Some(src.typed::<String>(k, value)?),
                "profile" => profile = Some(src.variant::<Profile>(k, value)?),
                "guest" => guest = Some(src.variant::<GuestState>(k, value)?),
                "points" => points = Some(src.points(value)?),
                "settle-ms" => settle_ms = Some(src.settle_ms(value)?),
                "regression" => regression = Some(src.typed::<String>(k, value)?),
                _ => {
                    return Err(src.err(
                        key.span(),
                        k,
                        format!(
                            "unknown field `{k}`, expected one of {}",
                            KEYS.map(|k| format!("`{k}`")).join(", ")
                        ),
                    ));
                }
            }
        }

        let missing = |field: &str| src.err(0..0, field, "missing required field".to_string());
        Ok(Case {
            name,
            path: path.to_path_buf(),
            description: description.unwrap_or_default(),
            profile: profile.ok_or_else(|| missing("profile"))?,
            guest: guest.ok_or_else(|| missing("guest"))?,
            points: points.ok_or_else(|| missing("points"))?,
            settle: Duration::from_millis(settle_ms.unwrap_or(DEFAULT_SETTLE_MS)),
            regression,
        })
    }

    /// `Ok` if the kit can run this case today; otherwise why not (the runner
    /// reports its trials as not run, with this reason).
    pub fn runnable(&self) -> Result<(), String> {
        match self.profile {
            Profile::Memory => Ok(()),
            Profile::VhostUser => Err(
                "profile `vhost-user` is not built yet: cprkit has no vhost-user device daemon"
                    .to_string(),
            ),
            Profile::VhostKernel => Err(
                "profile `vhost-kernel` is not built yet: cprkit cannot yet attach \
                 /dev/vhost-net or /dev/vhost-vsock (this host has neither)"
                    .to_string(),
            ),
        }
    }
}

/// The case name of a file: its stem, checked to be usable in a trial name.
fn case_name(path: &Path) -> Result<String, CaseError> {
    let bad = |name: String, message: &str| CaseError::BadName {
        file: path.to_path_buf(),
        name,
        message: message.to_string(),
    };
    let Some(stem) = path.file_stem() else {
        return Err(bad(String::new(), "the path has no file name"));
    };
    let Some(name) = stem.to_str() else {
        return Err(bad(stem.to_string_lossy().into_owned(), "not UTF-8"));
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(
            name.to_string(),
            "a case name is made of ASCII letters, digits, `-`, `_` and `.`",
        ));
    }
    Ok(name.to_string())
}

/// A case file's text, for turning byte offsets into lines.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Range<usize>, field: &str, message: String) -> CaseError {
        CaseError::Field {
            file: self.file.to_path_buf(),
            line: self.line(span.start),
            field: field.to_string(),
            message,
        }
    }

    /// A value deserialized with serde, so messages are serde's
    /// ("unknown variant `sleeping`, expected `running` or `paused`").
    fn typed<T: for<'de> Deserialize<'de>>(
        &self,
        field: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<T, CaseError> {
        T::deserialize(ValueDeserializer::from(value.clone()))
            .map_err(|e| self.err(value.span(), field, e.message().to_string()))
    }

    /// A unit enum spelled as a string; other types are refused as "expected a
    /// string" rather than as serde's enum-from-table forms.
    fn variant<T: for<'de> Deserialize<'de>>(
        &self,
        field: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<T, CaseError> {
        let text: String = self.typed(field, value)?;
        T::deserialize(StrDeserializer::<serde::de::value::Error>::new(&text))
            .map_err(|e| self.err(value.span(), field, e.to_string()))
    }

    fn settle_ms(&self, value: &Spanned<DeValue<'_>>) -> Result<u64, CaseError> {
        let ms: u64 = self.typed("settle-ms", value)?;
        if !SETTLE_MS_RANGE.contains(&ms) {
            return Err(self.err(
                value.span(),
                "settle-ms",
                format!(
                    "{ms} is out of range: write {} to {} (milliseconds)",
                    SETTLE_MS_RANGE.start(),
                    SETTLE_MS_RANGE.end()
                ),
            ));
        }
        Ok(ms)
    }

    fn points(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<Option<FaultPoint>>, CaseError> {
        const HOW: &str = r#"write "all", or a list of "no-fault" and FAULT@STEP, e.g. ["no-fault", "kill-target@cpr-save"]"#;
        let items = match value.get_ref() {
            DeValue::String(s) if s == "all" => {
                return Ok(std::iter::once(None)
                    .chain(FaultPoint::all().into_iter().map(Some))
                    .collect());
            }
            DeValue::String(s) => {
                return Err(self.err(
                    value.span(),
                    "points",
                    format!("`{s}` is not \"all\": {HOW}"),
                ));
            }
            DeValue::Array(items) => items,
            other => {
                return Err(self.err(
                    value.span(),
                    "points",
                    format!("invalid type: {}; {HOW}", other.type_str()),
                ));
            }
        };
        if items.is_empty() {
            return Err(self.err(
                value.span(),
                "points",
                format!("no points: a case must run at least one; {HOW}"),
            ));
        }
        let mut points = Vec::with_capacity(items.len());
        let mut seen: BTreeMap<Option<FaultPoint>, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("points[{i}]");
            let text: String = self.typed(&field, item)?;
            let point = if text == "no-fault" {
                None
            } else {
                Some(
                    text.parse::<FaultPoint>()
                        .map_err(|e| self.err(item.span(), &field, e.to_string()))?,
                )
            };
            if let Some(first) = seen.insert(point, i) {
                return Err(self.err(
                    item.span(),
                    &field,
                    format!("duplicate point `{text}` (already listed as points[{first}])"),
                ));
            }
            points.push(point);
        }
        Ok(points)
    }
}

/// Whether a directory entry is kept out of the search for case files.
fn skipped_dir(name: &str) -> bool {
    name.starts_with('.') || matches!(name, "src" | "tests" | "target")
}

/// Every `*.toml` case file under `dir`, recursively.
fn case_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CaseError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CaseError::Io { path, source }
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Directories are not followed through symlinks (no loops); files are.
        let ty = entry.file_type().map_err(io_err(&path))?;
        if ty.is_dir() {
            if !skipped_dir(&name) {
                case_files(&path, out)?;
            }
        } else if name.ends_with(".toml") && name != "Cargo.toml" && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads every case under `dir` (recursively), sorted by name. Two files with
/// the same name are an error naming both.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let mut files = Vec::new();
    case_files(dir, &mut files)?;
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    for file in files {
        let case = Case::load(&file)?;
        if let Some(first) = cases.get(&case.name) {
            return Err(CaseError::DuplicateName {
                name: case.name,
                first: first.path.clone(),
                second: file,
            });
        }
        cases.insert(case.name.clone(), case);
    }
    Ok(cases.into_values().collect())
}

/// The repository's cases directory: `$CPRKIT_CASES` if set, else this crate's
/// directory (`cases/`).
pub fn cases_dir() -> PathBuf {
    match std::env::var_os("CPRKIT_CASES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// The name of a point: `no-fault` or `FAULT@STEP` (`kill-target@cpr-save`).
pub fn point_name(p: Option<FaultPoint>) -> String {
    match p {
        None => "no-fault".to_string(),
        Some(p) => p.to_string(),
    }
}

/// One trial: a VMM (adapter name, possibly with a variant such as
/// `refvmm:legacy-stop-order`), a case and one of its points.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialId {
    pub vmm: String,
    pub case: String,
    pub point: Option<FaultPoint>,
}

impl TrialId {
    /// `{vmm}::{case}/{point}`, e.g. `refvmm::memory-running/kill-target@cpr-save`.
    pub fn name(&self) -> String {
        format!("{}::{}/{}", self.vmm, self.case, point_name(self.point))
    }

    /// The inverse of [`TrialId::name`]; `None` if `s` is not a trial name.
    pub fn parse(s: &str) -> Option<TrialId> {
        let (head, point) = s.rsplit_once('/')?;
        // Case names have no `:`, so the last `::` ends the VMM.
        let (vmm, case) = head.rsplit_once("::")?;
        if vmm.is_empty() || case.is_empty() || case.contains(':') {
            return None;
        }
        let point = match point {
            "no-fault" => None,
            p => Some(p.parse().ok()?),
        };
        Some(TrialId {
            vmm: vmm.to_string(),
            case: case.to_string(),
            point,
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
            case.points.iter().map(move |&point| {
                (
                    TrialId {
                        vmm: vmm.to_string(),
                        case: case.name.clone(),
                        point,
                    },
                    case,
                )
            })
        })
        .collect()
}

/// Whether `name` matches `pattern` as a whole, where `*` matches any run of
/// characters (including none) and `?` exactly one; every other character
/// matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the name position it is currently made to end at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("*", "", true)]
    #[case("*", "anything", true)]
    #[case("", "", true)]
    #[case("", "a", false)]
    #[case("memory-running", "memory-running", true)]
    #[case("memory-running", "memory-running2", false)]
    #[case("memory-*", "memory-running", true)]
    #[case("memory-*", "vhost-user-running", false)]
    #[case("*running", "memory-running", true)]
    #[case("*-paused", "memory-running", false)]
    #[case("memory-?aused", "memory-paused", true)]
    #[case("memory-?", "memory-", false)]
    #[case("*::memory-running/*", "refvmm::memory-running/no-fault", true)]
    #[case("*kill-target@*", "refvmm::memory-paused/kill-target@cpr-save", true)]
    #[case("*kill-target@*", "refvmm::memory-paused/kill-source@cpr-save", false)]
    #[case("a*b*c", "aXbYbZc", true)]
    #[case("a*b*c", "aXbYbZ", false)]
    #[case("**a**", "bab", true)]
    #[case("é?", "éü", true)]
    fn globs(#[case] pattern: &str, #[case] name: &str, #[case] want: bool) {
        assert_eq!(glob_match(pattern, name), want, "{pattern} vs {name}");
    }

    #[test]
    fn profiles_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        }
        assert_eq!(
            "vhost".parse::<Profile>().unwrap_err().to_string(),
            "unknown profile `vhost` (known: memory, vhost-user, vhost-kernel)"
        );
    }

    #[test]
    fn lines_count_from_one() {
        let src = Source {
            file: Path::new("x.toml"),
            text: "a\nb\r\nc",
        };
        assert_eq!(src.line(0), 1);
        assert_eq!(src.line(1), 1);
        assert_eq!(src.line(2), 2);
        assert_eq!(src.line(5), 3);
        assert_eq!(src.line(99), 3);
    }
}
