//! One case file: parsing it, with errors that name the file, line and field.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cprkit_harness::device::{Backend, Policy};
use cprkit_harness::plan::{FaultPoint, GuestState};
use cprkit_harness::scenario::{ExtraDevice, OnFailedLoad, Scenario, SideDiff, TargetStart};
use serde::Deserialize;
use serde::de::value::StrDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::{CaseError, Profile};

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
    /// Migration capabilities set on the source before `migrate` (QEMU's
    /// names, such as `return-path`); `events` is always set.
    pub capabilities: Vec<String>,
    /// The device daemon's ownership policy (profiles with a device; default `exclusive`).
    pub device_policy: Option<Policy>,
    /// The vhost-user-blk backend (profile `vhost-user`; default the kit's daemon).
    pub device_backend: Option<Backend>,
    /// The scenario beside the fault: what differs between the sides, how
    /// the target starts, its failed-load behaviour, the hops
    /// (`fault_hop` is left at 1: each point has its own, in `point_hops`).
    pub scenario: Scenario,
    /// The hop of each point of `points` (1 unless written `FAULT@STEP#N`).
    pub point_hops: Vec<u32>,
}

/// The keys a case file may have, in the order the docs list them.
const KEYS: [&str; 15] = [
    "description",
    "profile",
    "guest",
    "points",
    "settle-ms",
    "capabilities",
    "regression",
    "device-policy",
    "device-backend",
    "other-ram",
    "source-devices",
    "target-devices",
    "target-start",
    "on-failed-load",
    "hops",
];

/// The most handovers in a row a case may ask for.
pub const MAX_HOPS: u32 = 8;

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
        let mut capabilities = None;
        let mut device_policy = None;
        let mut device_backend = None;
        let mut other_ram = None;
        let mut source_devices = None;
        let mut target_devices = None;
        let mut target_start = None;
        let mut on_failed_load = None;
        let mut hops = None;
        for (key, value) in entries {
            let k: &str = key.get_ref();
            match k {
                "description" => description = Some(src.typed::<String>(k, value)?),
                "profile" => profile = Some(src.variant::<Profile>(k, value)?),
                "guest" => guest = Some(src.variant::<GuestState>(k, value)?),
                "points" => points = Some(src.points(value)?),
                "device-policy" => {
                    device_policy = Some((value.span(), src.variant::<Policy>(k, value)?));
                }
                "device-backend" => {
                    device_backend = Some((value.span(), src.variant::<Backend>(k, value)?));
                }
                "settle-ms" => settle_ms = Some(src.settle_ms(value)?),
                "regression" => regression = Some(src.typed::<String>(k, value)?),
                "capabilities" => capabilities = Some(src.typed::<Vec<String>>(k, value)?),
                "other-ram" => other_ram = Some(src.side(k, value)?),
                "source-devices" => source_devices = Some(src.typed::<Vec<ExtraDevice>>(k, value)?),
                "target-devices" => target_devices = Some(src.typed::<Vec<ExtraDevice>>(k, value)?),
                "target-start" => target_start = Some(src.variant::<TargetStart>(k, value)?),
                "on-failed-load" => on_failed_load = Some(src.variant::<OnFailedLoad>(k, value)?),
                "hops" => hops = Some(src.hops(value)?),
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
        let profile = profile.ok_or_else(|| missing("profile"))?;
        let device = profile != Profile::Memory;
        let hop_count = hops.map_or(1, |(_, n)| n);
        let (points, point_hops): (Vec<Option<FaultPoint>>, Vec<u32>) = match points
            .ok_or_else(|| missing("points"))?
        {
            Points::All => std::iter::once(None)
                .chain(FaultPoint::matrix(device).into_iter().map(Some))
                .map(|p| (p, 1))
                .unzip(),
            Points::Listed(listed) => {
                if let Some((i, (_, hop, span))) = listed
                    .iter()
                    .enumerate()
                    .find(|(_, (_, hop, _))| *hop > hop_count)
                {
                    return Err(src.err(
                        span.clone(),
                        &format!("points[{i}]"),
                        format!(
                            "hop #{hop} is past the case's last: it makes {hop_count} handover(s) (`hops`)"
                        ),
                    ));
                }
                if !device
                    && let Some((i, (p, _, span))) = listed
                        .iter()
                        .enumerate()
                        .find(|(_, (p, _, _))| p.is_some_and(|p| p.fault.needs_device()))
                {
                    return Err(src.err(
                        span.clone(),
                        &format!("points[{i}]"),
                        format!(
                            "`{}` needs a device: profile `{profile}` has none (use `vhost-user` or `vhost-kernel`)",
                            p.expect("a point")
                        ),
                    ));
                }
                listed.into_iter().map(|(p, hop, _)| (p, hop)).unzip()
            }
        };
        let device_policy = match device_policy {
            Some((span, _)) if !device => {
                return Err(src.err(
                    span,
                    "device-policy",
                    format!("profile `{profile}` has no device to set a policy for"),
                ));
            }
            Some((_, p)) => Some(p),
            None if device => Some(Policy::Exclusive),
            None => None,
        };
        let device_backend = match device_backend {
            Some((span, _)) if profile != Profile::VhostUser => {
                return Err(src.err(
                    span,
                    "device-backend",
                    format!("profile `{profile}` has no vhost-user device"),
                ));
            }
            Some((span, b)) if !b.observable() => {
                if let Some(i) = points
                    .iter()
                    .position(|p| p.is_some_and(|p| p.fault.needs_device()))
                {
                    return Err(src.err(
                        span,
                        "device-backend",
                        format!(
                            "`{}` (points[{i}]) needs the kit's own device; `{}` cannot inject it",
                            points[i].expect("a point"),
                            b.name()
                        ),
                    ));
                }
                Some(b)
            }
            Some((_, b)) => Some(b),
            None if profile == Profile::VhostUser => Some(Backend::Kit),
            None => None,
        };
        Ok(Case {
            name,
            path: path.to_path_buf(),
            description: description.unwrap_or_default(),
            profile,
            guest: guest.ok_or_else(|| missing("guest"))?,
            points,
            settle: Duration::from_millis(settle_ms.unwrap_or(DEFAULT_SETTLE_MS)),
            regression,
            capabilities: capabilities.unwrap_or_default(),
            device_policy,
            device_backend,
            scenario: Scenario {
                source: SideDiff {
                    other_ram: other_ram == Some(Side::Source),
                    devices: source_devices.unwrap_or_default(),
                },
                target: SideDiff {
                    other_ram: other_ram == Some(Side::Target),
                    devices: target_devices.unwrap_or_default(),
                },
                target_start: target_start.unwrap_or_default(),
                on_failed_load: on_failed_load.unwrap_or_default(),
                hops: hop_count,
                fault_hop: 1,
            },
            point_hops,
        })
    }

    /// `Ok` if the kit can run this case today; otherwise why not (the runner
    /// reports its trials as not run, with this reason).
    pub fn runnable(&self) -> Result<(), String> {
        match self.profile {
            Profile::Memory => Ok(()),
            Profile::VhostUser => match self.device_backend.and_then(Backend::missing) {
                Some(why) => Err(why),
                None => Ok(()),
            },
            Profile::VhostKernel => Err(crate::profile::vhost_kernel_not_built()),
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
pub(crate) struct Source<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// The 1-based line of a byte offset.
    pub(crate) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(crate) fn err(&self, span: Range<usize>, field: &str, message: String) -> CaseError {
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

    /// `source` or `target`.
    fn side(&self, field: &str, value: &Spanned<DeValue<'_>>) -> Result<Side, CaseError> {
        let text: String = self.typed(field, value)?;
        match text.as_str() {
            "source" => Ok(Side::Source),
            "target" => Ok(Side::Target),
            other => Err(self.err(
                value.span(),
                field,
                format!("unknown side `{other}`, expected `source` or `target`"),
            )),
        }
    }

    fn hops(&self, value: &Spanned<DeValue<'_>>) -> Result<(Range<usize>, u32), CaseError> {
        let n: u32 = self.typed("hops", value)?;
        if !(1..=MAX_HOPS).contains(&n) {
            return Err(self.err(
                value.span(),
                "hops",
                format!("{n} is out of range: write 1 to {MAX_HOPS} (handovers in a row)"),
            ));
        }
        Ok((value.span(), n))
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

    fn points(&self, value: &Spanned<DeValue<'_>>) -> Result<Points, CaseError> {
        const HOW: &str = r#"write "all", or a list of "no-fault" and FAULT@STEP, e.g. ["no-fault", "kill-target@cpr-save"]"#;
        let items = match value.get_ref() {
            DeValue::String(s) if s == "all" => return Ok(Points::All),
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
        let mut seen: BTreeMap<(Option<FaultPoint>, u32), usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("points[{i}]");
            let text: String = self.typed(&field, item)?;
            // `FAULT@STEP#N`: the fault at hop N (1 when not written).
            let (body, hop) = match text.rsplit_once('#') {
                Some((body, n)) => match n.parse::<u32>() {
                    Ok(n) if n >= 1 && body != "no-fault" => (body, n),
                    _ => {
                        return Err(self.err(
                            item.span(),
                            &field,
                            format!("`{text}`: write FAULT@STEP#N with N a hop from 1 (e.g. kill-target@cpr-save#2)"),
                        ));
                    }
                },
                None => (text.as_str(), 1),
            };
            let point = if body == "no-fault" {
                None
            } else {
                Some(
                    body.parse::<FaultPoint>()
                        .map_err(|e| self.err(item.span(), &field, e.to_string()))?,
                )
            };
            if let Some(first) = seen.insert((point, hop), i) {
                return Err(self.err(
                    item.span(),
                    &field,
                    format!("duplicate point `{text}` (already listed as points[{first}])"),
                ));
            }
            points.push((point, hop, item.span()));
        }
        Ok(Points::Listed(points))
    }
}

/// The `points` of a case as written: "all" is the profile's whole matrix; a
/// list keeps each point's place in the file.
enum Points {
    All,
    Listed(Vec<(Option<FaultPoint>, u32, Range<usize>)>),
}

/// A side named in a case file (`other-ram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A vhost-kernel case is not run because the kit cannot run it yet, on
    /// any host, and says so; a memory case runs.
    #[test]
    fn a_vhost_kernel_case_says_not_built_yet() {
        let case = |profile: &str| {
            Case::parse(
                Path::new("cases/x.toml"),
                &format!("profile = \"{profile}\"\nguest = \"running\"\npoints = [\"no-fault\"]\n"),
            )
            .unwrap()
        };
        let why = case("vhost-kernel").runnable().unwrap_err();
        assert!(why.contains("not built yet"), "{why}");
        assert!(!why.contains("on this host"), "{why}");
        assert_eq!(case("memory").runnable(), Ok(()));
    }
}
