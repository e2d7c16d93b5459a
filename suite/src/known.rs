//! Known violations: the rules a VMM is known to break, kept per VMM beside its
//! snapshots (`snapshots/<vmm>/known-violations.toml`), and the reconciliation
//! of a run against them.
//!
//! A violation counts as expected only when an entry names its rule, one of
//! the entry's trial globs matches the trial, and the entry's `evidence` glob
//! matches the verdict's evidence: the rule must break *the same way* (as
//! WebKit's test262 expectations record how a test fails). An entry that no
//! trial of the run reproduces is itself a failure: "expected violation not
//! seen". Entries whose trial globs match no trial of the run (a filtered run)
//! are left out of that check.
//!
//! ```toml
//! [[violation]]
//! rule = "ORD-1"
//! trials = ["qemu::memory-running/*"]
//! evidence = "source runstate `running` when the first fd crossed*"
//! reason = "QEMU 10.0 saves the CPR state (the fds) before it stops the VM"
//! upstream = "https://lore.kernel.org/qemu-devel/..."
//! versions = ">=10.0, <10.1"   # optional: the VMM versions it holds for
//! builds = ["QEMU 10.0.2 (Debian *"]  # optional: globs on what the VMM reports of itself
//! intermittent = true    # optional: expected in some repeats only (`run --repeat K`)
//! ```
//!
//! Under `cprkit run --repeat K` ([`reconcile_runs`]), an entry is seen when
//! one repeat of one trial it covers shows its break, so one lucky pass is
//! never a fix; a trial whose repeats differ is intermittent, expected only
//! when `intermittent` entries account for the difference
//! ([`KnownViolations::covering_intermittent`]).
//!
//! A trial glob written for the list's own VMM kind (`qemu::...` in
//! `snapshots/qemu/`) covers that kind's trials however the VMM was named
//! (`--vmm qemu:/usr/bin/qemu-system-x86_64`). `versions` and `builds` say
//! which builds an entry belongs to: a build whose self-description (its
//! adapter's `version()`, e.g. `QEMU 10.0.2 (Debian 1:10.0.2+ds-2...)`) no
//! `builds` glob matches does not inherit the entry, so a patched 10.0.2 built
//! from source is judged on its own, unless a list is chosen for it
//! (`cprkit run --known-violations FILE`).

use std::path::{Path, PathBuf};

use cprkit_harness::rules::{self, Status, Verdict};
use serde::Deserialize;
use toml::Spanned;

use crate::case::Source;
use crate::repeat::{Run, outcome_set, summary};
use crate::{CaseError, glob_match, vmm_snapshots_dir};

/// One known violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownViolation {
    pub rule: String,
    /// Globs on full trial names.
    pub trials: Vec<String>,
    /// A glob on the verdict's evidence: how the rule breaks.
    pub evidence: String,
    pub reason: String,
    pub upstream: String,
    /// The VMM versions the entry holds for (`>=10.0, <10.1`); none: all.
    pub versions: Option<VersionRange>,
    /// Globs on the VMM's self-description (its version line): the builds
    /// the entry holds for; empty: every build in `versions`.
    pub builds: Vec<String>,
    /// The break is expected in *some* repeats of the covered trials
    /// (`run --repeat K`): seen once it is seen in one repeat, and the
    /// other repeats passing is not a fix.
    pub intermittent: bool,
    /// The line of the entry in its file.
    pub line: usize,
}

/// A range of versions: comparisons joined by commas, all of which must hold
/// (`>=10.0, <10.1`; `=10.0.2`). Versions compare as numbers, part by part;
/// a missing part counts as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    text: String,
    bounds: Vec<(Cmp, Vec<u64>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

impl VersionRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut bounds = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (cmp, rest) = [
                (">=", Cmp::Ge),
                ("<=", Cmp::Le),
                (">", Cmp::Gt),
                ("<", Cmp::Lt),
                ("=", Cmp::Eq),
            ]
            .iter()
            .find_map(|(p, c)| part.strip_prefix(p).map(|r| (*c, r.trim())))
            .ok_or_else(|| format!("`{part}`: write a comparison such as >=10.0 or <10.1"))?;
            let version = version_numbers(rest).filter(|_| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
            });
            bounds.push((
                cmp,
                version
                    .ok_or_else(|| format!("`{part}`: `{rest}` is not a version like 10.0.2"))?,
            ));
        }
        Ok(VersionRange {
            text: text.to_string(),
            bounds,
        })
    }

    /// Whether `version` (the first x.y[.z] in a version string) is in range;
    /// a string with no version is in no range.
    pub fn contains(&self, version: &str) -> bool {
        let Some(v) = first_version(version) else {
            return false;
        };
        self.bounds.iter().all(|(cmp, b)| {
            let o = cmp_versions(&v, b);
            match cmp {
                Cmp::Ge => o.is_ge(),
                Cmp::Gt => o.is_gt(),
                Cmp::Le => o.is_le(),
                Cmp::Lt => o.is_lt(),
                Cmp::Eq => o.is_eq(),
            }
        })
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn version_numbers(s: &str) -> Option<Vec<u64>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

/// The first `x.y` or `x.y.z` in a version string ("QEMU 10.0.2 (Debian ...)").
fn first_version(s: &str) -> Option<Vec<u64>> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.') && !w.starts_with('.'))
        .find_map(|w| version_numbers(w.trim_end_matches('.')))
}

fn cmp_versions(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    (0..n)
        .map(|i| at(a, i).cmp(&at(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// The VMM kind of a list at `path`: its directory's name (`snapshots/qemu/`).
fn owner_of(path: &Path) -> String {
    path.parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a trial glob of the list of VMM kind `owner` (its snapshot
/// directory's name) covers `trial`. A glob written for the list's own kind
/// (`qemu::memory-running/*` in `snapshots/qemu/`) covers that kind's trial
/// however the VMM was named on the command line
/// (`qemu:/usr/bin/qemu-system-x86_64::memory-running/no-fault`): the list is
/// only ever applied to trials of its own kind.
fn glob_covers(glob: &str, trial: &str, owner: &str) -> bool {
    if glob_match(glob, trial) {
        return true;
    }
    match (glob.split_once("::"), trial.split_once("::")) {
        (Some((kind, glob_rest)), Some((_, trial_rest))) => {
            kind.replace(':', "-") == owner && glob_match(glob_rest, trial_rest)
        }
        _ => false,
    }
}

impl KnownViolation {
    fn covers_trial(&self, trial: &str, owner: &str) -> bool {
        self.trials.iter().any(|g| glob_covers(g, trial, owner))
    }

    /// Whether this entry of the list of VMM kind `owner` expects `v`, a
    /// verdict of `trial`.
    pub fn expects(&self, trial: &str, owner: &str, v: &Verdict) -> bool {
        v.status == Status::Fail
            && v.rule == self.rule
            && self.covers_trial(trial, owner)
            && glob_match(&self.evidence, &v.evidence)
    }
}

/// The known violations of one VMM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownViolations {
    pub path: PathBuf,
    /// The VMM kind the list belongs to: the snapshot directory's name.
    pub owner: String,
    pub entries: Vec<KnownViolation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    violation: Vec<Spanned<EntryForm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryForm {
    rule: Spanned<String>,
    trials: Spanned<Vec<String>>,
    #[serde(default = "any")]
    evidence: String,
    reason: Spanned<String>,
    upstream: Spanned<String>,
    #[serde(default)]
    versions: Option<Spanned<String>>,
    #[serde(default)]
    builds: Vec<String>,
    #[serde(default)]
    intermittent: bool,
}

fn any() -> String {
    "*".into()
}

impl KnownViolations {
    /// The file name inside a VMM's snapshot directory.
    pub const FILE: &'static str = "known-violations.toml";

    /// Parses a known-violations file; errors name the file, line and field.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CaseError> {
        let src = Source { file: path, text };
        let form: FileForm = toml::from_str(text).map_err(|e| CaseError::Syntax {
            file: path.to_path_buf(),
            line: e.span().map(|s| src.line(s.start)).unwrap_or(1),
            message: e.message().to_string(),
        })?;
        let mut entries = Vec::new();
        for (i, entry) in form.violation.into_iter().enumerate() {
            let line = src.line(entry.span().start);
            let e = entry.into_inner();
            let field = |name: &str| format!("violation[{i}].{name}");
            if rules::rule(e.rule.get_ref()).is_none() {
                let known: Vec<&str> = rules::RULES.iter().map(|r| r.id).collect();
                return Err(src.err(
                    e.rule.span(),
                    &field("rule"),
                    format!(
                        "unknown rule `{}` (known: {})",
                        e.rule.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
            if e.trials.get_ref().is_empty() {
                return Err(src.err(
                    e.trials.span(),
                    &field("trials"),
                    "list at least one trial glob".into(),
                ));
            }
            for (name, value) in [("reason", &e.reason), ("upstream", &e.upstream)] {
                if value.get_ref().trim().is_empty() {
                    return Err(src.err(value.span(), &field(name), "must not be empty".into()));
                }
            }
            let versions = match &e.versions {
                Some(v) => Some(
                    VersionRange::parse(v.get_ref())
                        .map_err(|m| src.err(v.span(), &field("versions"), m))?,
                ),
                None => None,
            };
            entries.push(KnownViolation {
                rule: e.rule.into_inner(),
                trials: e.trials.into_inner(),
                evidence: e.evidence,
                reason: e.reason.into_inner(),
                upstream: e.upstream.into_inner(),
                versions,
                builds: e.builds,
                intermittent: e.intermittent,
                line,
            });
        }
        Ok(KnownViolations {
            path: path.to_path_buf(),
            owner: owner_of(path),
            entries,
        })
    }

    /// Loads `dir/known-violations.toml`; no file means no known violation.
    pub fn load(dir: &Path) -> Result<Self, CaseError> {
        let path = dir.join(Self::FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownViolations {
                owner: owner_of(&path),
                path,
                entries: Vec::new(),
            }),
            Err(source) => Err(CaseError::Io { path, source }),
        }
    }

    /// Loads a chosen file as the list of VMM kind `owner`; the file must exist.
    pub fn load_file(path: &Path, owner: &str) -> Result<Self, CaseError> {
        let text = std::fs::read_to_string(path).map_err(|source| CaseError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut list = Self::parse(path, &text)?;
        list.owner = owner.to_string();
        Ok(list)
    }

    /// Keeps the entries whose version range holds `version` (their `builds`
    /// not applied: for a list chosen for the build under test).
    pub fn for_version_range(mut self, version: &str) -> Self {
        self.entries
            .retain(|e| e.versions.as_ref().is_none_or(|r| r.contains(version)));
        self
    }

    /// Keeps the entries that hold for a VMM that reports itself as
    /// `version` (its version range, and its builds).
    pub fn for_version(mut self, version: &str) -> Self {
        self.entries.retain(|e| {
            e.versions.as_ref().is_none_or(|r| r.contains(version))
                && (e.builds.is_empty() || e.builds.iter().any(|g| glob_match(g, version)))
        });
        self
    }

    /// The entry that expects this verdict, if any.
    pub fn expecting(&self, trial: &str, v: &Verdict) -> Option<&KnownViolation> {
        self.entries
            .iter()
            .find(|k| k.expects(trial, &self.owner, v))
    }

    /// The `intermittent` entries that account for the differences between
    /// the repeats of `trial`, if they do: every repeat was judged, and once
    /// the rules those entries expect to break in some repeat (and do) are
    /// set aside, every repeat broke the same rules. (A break moves other
    /// rules between pass and not applicable: a refused migrate makes FAIL-1
    /// apply and DONE-1 not; those follow from the expected break.) None
    /// when the repeats differ otherwise, or none of their breaks is an
    /// `intermittent` entry's.
    pub fn covering_intermittent(&self, trial: &str, runs: &[Run]) -> Option<Vec<&KnownViolation>> {
        let mut judged = Vec::new();
        for r in runs {
            match r {
                Run::Judged(vs) => judged.push(vs),
                _ => return None,
            }
        }
        let mut entries: Vec<&KnownViolation> = Vec::new();
        let mut rules: Vec<&str> = Vec::new();
        for v in judged.iter().flat_map(|vs| vs.iter()) {
            if let Some(k) = self.expecting(trial, v).filter(|k| k.intermittent) {
                if !entries.iter().any(|e| std::ptr::eq(*e, k)) {
                    entries.push(k);
                }
                if !rules.contains(&v.rule) {
                    rules.push(v.rule);
                }
            }
        }
        if entries.is_empty() {
            return None;
        }
        let rest = |vs: &Vec<Verdict>| -> Vec<&str> {
            vs.iter()
                .filter(|v| v.status == Status::Fail && !rules.contains(&v.rule))
                .map(|v| v.rule)
                .collect()
        };
        let first = rest(judged[0]);
        judged.iter().all(|vs| rest(vs) == first).then_some(entries)
    }
}

/// The known violations of every VMM of a run, by VMM name, loaded from each
/// VMM's snapshot directory.
#[derive(Debug, Default)]
pub struct KnownByVmm {
    by_vmm: std::collections::BTreeMap<String, KnownViolations>,
}

impl KnownByVmm {
    /// Loads the file of every VMM of `results` (no file: nothing known),
    /// keeping the entries that hold for its version (`version_of(vmm name)`).
    /// With `chosen`, that file is every VMM's list instead (a build that
    /// does not inherit its kind's list can be given one).
    pub fn load(
        results: &[crate::runner::TrialResult],
        version_of: impl Fn(&str) -> String,
        chosen: Option<&Path>,
    ) -> Result<Self, CaseError> {
        let mut by_vmm = std::collections::BTreeMap::new();
        for r in results {
            if !by_vmm.contains_key(&r.id.vmm) {
                let version = version_of(&r.id.vmm);
                let known = match chosen {
                    // Chosen for this build: its `builds` keys do not apply.
                    Some(file) => KnownViolations::load_file(file, &r.snapshot_dir)?
                        .for_version_range(&version),
                    None => KnownViolations::load(&vmm_snapshots_dir(&r.snapshot_dir))?
                        .for_version(&version),
                };
                by_vmm.insert(r.id.vmm.clone(), known);
            }
        }
        Ok(KnownByVmm { by_vmm })
    }

    pub fn get(&self, vmm: &str) -> Option<&KnownViolations> {
        self.by_vmm.get(vmm)
    }
}

/// A run's violations sorted against the known ones.
#[derive(Debug, Default)]
pub struct Reconciled<'k> {
    /// (trial, verdict, the entry that expects it)
    pub expected: Vec<(String, Verdict, &'k KnownViolation)>,
    /// (trial, verdict) that no entry expects.
    pub unexpected: Vec<(String, Verdict)>,
    /// Entries that cover some trial of the run, yet no repeat of any trial
    /// reproduced.
    pub unseen: Vec<&'k KnownViolation>,
    /// (trial, its outcomes) of trials whose repeats differ in a way no
    /// `intermittent` entry accounts for.
    pub intermittent: Vec<(String, String)>,
    /// (trial, its outcomes, the `intermittent` entries that account for
    /// the differences).
    pub intermittent_expected: Vec<(String, String, Vec<&'k KnownViolation>)>,
}

impl Reconciled<'_> {
    pub fn is_clean(&self) -> bool {
        self.unexpected.is_empty() && self.unseen.is_empty() && self.intermittent.is_empty()
    }
}

/// Sorts the verdicts of a run (trial name, its verdicts) against `known`.
pub fn reconcile<'k>(known: &'k KnownViolations, run: &[(String, Vec<Verdict>)]) -> Reconciled<'k> {
    let runs: Vec<(String, Vec<Run>)> = run
        .iter()
        .map(|(t, vs)| (t.clone(), vec![Run::Judged(vs.clone())]))
        .collect();
    reconcile_runs(known, &runs)
}

/// Sorts the verdicts of a run whose trials ran one or more times (trial
/// name, each repeat's run) against `known`. Each distinct failing verdict
/// (rule and evidence) of a trial, in any repeat, is expected or unexpected
/// once; an entry is seen when one repeat of one trial it covers shows it;
/// a trial whose repeats differ is intermittent, expected only when its
/// `intermittent` entries account for the difference
/// ([`KnownViolations::covering_intermittent`]).
pub fn reconcile_runs<'k>(
    known: &'k KnownViolations,
    run: &[(String, Vec<Run>)],
) -> Reconciled<'k> {
    let mut out = Reconciled::default();
    let owner = &known.owner;
    let mut seen = vec![false; known.entries.len()];
    for (trial, runs) in run {
        let mut failing: Vec<&Verdict> = Vec::new();
        for v in runs
            .iter()
            .filter_map(|r| match r {
                Run::Judged(vs) => Some(vs),
                _ => None,
            })
            .flatten()
            .filter(|v| v.status == Status::Fail)
        {
            if !failing
                .iter()
                .any(|f| f.rule == v.rule && f.evidence == v.evidence)
            {
                failing.push(v);
            }
        }
        let outcomes = outcome_set(runs);
        if outcomes.len() > 1 {
            let said = summary(&outcomes);
            match known.covering_intermittent(trial, runs) {
                Some(entries) => out
                    .intermittent_expected
                    .push((trial.clone(), said, entries)),
                None => out.intermittent.push((trial.clone(), said)),
            }
        }
        for v in failing {
            match known
                .entries
                .iter()
                .position(|k| k.expects(trial, owner, v))
            {
                Some(i) => {
                    seen[i] = true;
                    out.expected
                        .push((trial.clone(), v.clone(), &known.entries[i]));
                }
                None => out.unexpected.push((trial.clone(), v.clone())),
            }
        }
    }
    for (i, k) in known.entries.iter().enumerate() {
        if !seen[i] && run.iter().any(|(t, _)| k.covers_trial(t, owner)) {
            out.unseen.push(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const FILE: &str = r#"
# QEMU 10.0.2
[[violation]]
rule = "ORD-1"
trials = ["qemu::memory-running/*"]
evidence = "source runstate `running`*"
reason = "fds before stop"
upstream = "https://example.org/patch"
"#;

    fn verdict(rule: &'static str, status: Status, evidence: &str) -> Verdict {
        Verdict {
            rule,
            status,
            evidence: evidence.into(),
            detail: String::new(),
        }
    }

    fn known() -> KnownViolations {
        KnownViolations::parse(Path::new("k.toml"), FILE).unwrap()
    }

    #[test]
    fn parses_with_the_entry_line() {
        let k = known();
        assert_eq!(k.entries.len(), 1);
        assert_eq!(k.entries[0].line, 3);
        assert_eq!(k.entries[0].rule, "ORD-1");
    }

    #[test]
    fn a_violation_is_expected_only_when_it_breaks_the_same_way() {
        let k = known();
        let run = vec![
            (
                "qemu::memory-running/no-fault".to_string(),
                vec![verdict(
                    "ORD-1",
                    Status::Fail,
                    "source runstate `running` when the first fd crossed",
                )],
            ),
            (
                "qemu::memory-running/cancel@cpr-save".to_string(),
                vec![verdict("ORD-1", Status::Fail, "the guest counter moved")],
            ),
            (
                "qemu::memory-paused/no-fault".to_string(),
                vec![verdict("FAIL-4", Status::Fail, "x")],
            ),
        ];
        let r = reconcile(&k, &run);
        assert_eq!(r.expected.len(), 1);
        assert_eq!(
            r.unexpected.len(),
            2,
            "another evidence, another rule: unexpected"
        );
        assert!(r.unseen.is_empty());
        assert!(!r.is_clean());
    }

    #[test]
    fn the_list_of_a_kind_applies_however_the_vmm_was_named() {
        // snapshots/qemu/known-violations.toml, its globs written `qemu::`.
        let k = KnownViolations::parse(Path::new("snapshots/qemu/known-violations.toml"), FILE)
            .unwrap();
        assert_eq!(k.owner, "qemu");
        let ord1 = verdict(
            "ORD-1",
            Status::Fail,
            "source runstate `running` when the first fd crossed",
        );
        for name in [
            "qemu::memory-running/no-fault",
            "qemu:/usr/bin/qemu-system-x86_64::memory-running/no-fault",
        ] {
            assert!(k.expecting(name, &ord1).is_some(), "{name}");
        }
        // Not another case, and not another rule or evidence.
        assert!(
            k.expecting(
                "qemu:/usr/bin/qemu-system-x86_64::memory-paused/no-fault",
                &ord1
            )
            .is_none()
        );
        // A mutant's list: its directory spells the name with `-`.
        let m = KnownViolations::parse(
            Path::new("snapshots/refvmm-legacy-stop-order/known-violations.toml"),
            &FILE.replace("qemu::", "refvmm:legacy-stop-order::"),
        )
        .unwrap();
        assert!(
            m.expecting("refvmm:legacy-stop-order::memory-running/no-fault", &ord1)
                .is_some()
        );
        // A glob that names another kind keeps its plain meaning.
        let other = KnownViolations::parse(
            Path::new("snapshots/qemu/known-violations.toml"),
            &FILE.replace("qemu::", "refvmm::"),
        )
        .unwrap();
        assert!(
            other
                .expecting("qemu::memory-running/no-fault", &ord1)
                .is_none()
        );
    }

    #[test]
    fn an_entry_keyed_by_build_holds_for_that_build_only() {
        let text =
            format!("{FILE}versions = \">=10.0, <10.1\"\nbuilds = [\"QEMU 10.0.2 (Debian *\"]\n");
        let k = KnownViolations::parse(Path::new("k.toml"), &text).unwrap();
        let stock = k
            .clone()
            .for_version("QEMU 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)");
        assert_eq!(stock.entries.len(), 1);
        // A build of the same version from patched source reports no Debian
        // package: it does not inherit the stock build's entry.
        let patched = k.for_version("QEMU 10.0.2");
        assert!(patched.entries.is_empty());
    }

    #[test]
    fn an_entry_not_reproduced_is_reported_unless_filtered_out() {
        let k = known();
        let clean = vec![(
            "qemu::memory-running/no-fault".to_string(),
            vec![verdict("ORD-1", Status::Pass, "ok")],
        )];
        assert_eq!(reconcile(&k, &clean).unseen.len(), 1);
        let other = vec![("qemu::memory-paused/no-fault".to_string(), vec![])];
        assert!(reconcile(&k, &other).is_clean());
    }

    /// FAIL-2 broken in `fails` of the repeats of
    /// `refvmm::memory-running/cancel@target-init`, passed in the others.
    fn repeats(fails: &[bool]) -> Vec<(String, Vec<Run>)> {
        let runs = fails
            .iter()
            .map(|&f| {
                Run::Judged(vec![
                    verdict("DONE-0", Status::Pass, "ok"),
                    if f {
                        verdict("FAIL-2", Status::Fail, "the source did not resume")
                    } else {
                        verdict("FAIL-2", Status::Pass, "the source resumed")
                    },
                ])
            })
            .collect();
        vec![(
            "refvmm::memory-running/cancel@target-init".to_string(),
            runs,
        )]
    }

    fn fail2_entry(intermittent: bool) -> KnownViolations {
        let text = format!(
            "[[violation]]\nrule = \"FAIL-2\"\ntrials = [\"refvmm::memory-running/*\"]\nevidence = \"the source did not resume\"\nreason = \"a race\"\nupstream = \"u\"\n{}",
            if intermittent {
                "intermittent = true\n"
            } else {
                ""
            }
        );
        KnownViolations::parse(Path::new("snapshots/refvmm/known-violations.toml"), &text).unwrap()
    }

    #[test]
    fn repeats_that_differ_make_an_unexpected_intermittent_trial() {
        let empty = KnownViolations::default();
        let r = reconcile_runs(&empty, &repeats(&[false, true, false]));
        assert_eq!(
            r.intermittent,
            vec![(
                "refvmm::memory-running/cancel@target-init".to_string(),
                "2x ok, 1x VIOLATES FAIL-2".to_string()
            )]
        );
        assert_eq!(r.unexpected.len(), 1, "the break counted once");
        assert!(!r.is_clean());
        // The same outcome every time: not intermittent.
        let r = reconcile_runs(&empty, &repeats(&[false, false]));
        assert!(r.intermittent.is_empty() && r.is_clean());
    }

    #[test]
    fn an_intermittent_entry_is_satisfied_by_one_repeat() {
        let k = fail2_entry(true);
        assert!(k.entries[0].intermittent);
        let r = reconcile_runs(&k, &repeats(&[false, true, false]));
        assert!(r.is_clean(), "{r:?}");
        assert!(r.intermittent.is_empty());
        assert_eq!(r.intermittent_expected.len(), 1);
        assert_eq!(r.expected.len(), 1);
        // The break moves another rule between pass and not applicable: it
        // follows from the break, and is accounted for with it.
        let mut run = repeats(&[false, true]);
        if let Run::Judged(vs) = &mut run[0].1[1] {
            vs[0] = verdict("DONE-0", Status::NotApplicable, "no transfer");
        }
        assert!(reconcile_runs(&k, &run).is_clean());
        // Every repeat shows it: satisfied too.
        assert!(reconcile_runs(&k, &repeats(&[true, true])).is_clean());
        // No repeat shows it: not seen.
        let r = reconcile_runs(&k, &repeats(&[false, false, false]));
        assert_eq!(r.unseen.len(), 1);
    }

    #[test]
    fn an_entry_without_intermittent_seen_in_some_repeats_is_unexpected() {
        let k = fail2_entry(false);
        let r = reconcile_runs(&k, &repeats(&[true, false]));
        assert_eq!(r.expected.len(), 1, "the break itself is known");
        assert!(r.unseen.is_empty(), "one lucky pass is not a fix");
        assert_eq!(r.intermittent.len(), 1, "but the trial is intermittent");
        assert!(!r.is_clean());
        assert!(reconcile_runs(&k, &repeats(&[true, true])).is_clean());
    }

    #[test]
    fn an_intermittent_entry_does_not_cover_other_differences() {
        let k = fail2_entry(true);
        let mut run = repeats(&[true, false]);
        // The second repeat also breaks DONE-0: no entry accounts for that.
        if let Run::Judged(vs) = &mut run[0].1[1] {
            vs[0] = verdict("DONE-0", Status::Fail, "never completed");
        }
        let r = reconcile_runs(&k, &run);
        assert_eq!(r.intermittent.len(), 1, "{r:?}");
        // A repeat that errored is not accounted for either.
        let mut run = repeats(&[true, false]);
        run[0].1[1] = Run::Error("the target never listened".into());
        assert_eq!(reconcile_runs(&k, &run).intermittent.len(), 1);
    }

    #[rstest]
    #[case(">=10.0, <10.1", "QEMU 10.0.2 (Debian 1:10.0.2+ds-2)", true)]
    #[case(">=10.0, <10.1", "QEMU 10.1.0", false)]
    #[case("<10.0", "QEMU 9.2", true)]
    #[case("=10.0.2", "10.0.2", true)]
    #[case(">=10.0", "refvmm 0.1.0 (cprkit's reference VMM)", false)]
    #[case(">=10.0", "unknown", false)]
    fn version_ranges(#[case] range: &str, #[case] version: &str, #[case] inside: bool) {
        assert_eq!(
            VersionRange::parse(range).unwrap().contains(version),
            inside,
            "{range} {version}"
        );
    }

    #[test]
    fn entries_outside_the_version_are_dropped() {
        let text = format!("{FILE}versions = \">=10.0, <10.1\"\n");
        let k = KnownViolations::parse(Path::new("k.toml"), &text).unwrap();
        assert_eq!(k.clone().for_version("QEMU 10.0.2").entries.len(), 1);
        assert!(k.for_version("QEMU 10.1.0").entries.is_empty());
        let bad = format!("{FILE}versions = \"about 10\"\n");
        let e = KnownViolations::parse(Path::new("k.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("k.toml:9: field `violation[0].versions`"),
            "{e}"
        );
    }

    #[rstest]
    #[case(
        "[[violation]]\nrule = \"ORD-9\"\ntrials = [\"*\"]\nreason = \"r\"\nupstream = \"u\"\n",
        "k.toml:2: field `violation[0].rule`: unknown rule `ORD-9`"
    )]
    #[case(
        "[[violation]]\nrule = \"ORD-1\"\ntrials = []\nreason = \"r\"\nupstream = \"u\"\n",
        "k.toml:3: field `violation[0].trials`: list at least one trial glob"
    )]
    #[case(
        "[[violation]]\nrule = \"ORD-1\"\ntrials = [\"*\"]\nreason = \" \"\nupstream = \"u\"\n",
        "k.toml:4: field `violation[0].reason`: must not be empty"
    )]
    #[case("[[violation]]\nrule = \"ORD-1\"\nfrob = 1\n", "k.toml:")]
    fn malformed_files_name_file_line_and_field(#[case] text: &str, #[case] want: &str) {
        let e = KnownViolations::parse(Path::new("k.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "{e}");
    }
}
