//! Loading case files: the shipped ones, the trial matrix, and every way a case
//! file can be wrong (each must name the file, the line and the field).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cprkit_harness::device::Policy;
use cprkit_harness::plan::{BadRequest, Fault, FaultPoint, GuestState, Step};
use cprkit_suite::{Case, CaseError, Profile, TrialId, load_dir, point_name, trials};
use rstest::rstest;

fn shipped_dir() -> PathBuf {
    cprkit_suite::cases_dir()
}

fn shipped() -> Vec<Case> {
    load_dir(&shipped_dir()).expect("the shipped cases load")
}

/// Writes `text` as `name` in a fresh directory and loads it.
fn load_text(name: &str, text: &str) -> (tempfile::TempDir, PathBuf, Result<Case, CaseError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    let result = Case::load(&path);
    (dir, path, result)
}

fn all_points() -> Vec<Option<FaultPoint>> {
    std::iter::once(None)
        .chain(FaultPoint::all().into_iter().map(Some))
        .collect()
}

#[rstest]
#[case("memory-running", GuestState::Running)]
#[case("memory-paused", GuestState::Paused)]
fn shipped_cases_load(#[case] name: &str, #[case] guest: GuestState) {
    let path = shipped_dir().join(format!("{name}.toml"));
    let case = Case::load(&path).unwrap();
    assert_eq!(case.name, name);
    assert_eq!(case.path, path);
    assert_eq!(case.profile, Profile::Memory);
    assert_eq!(case.guest, guest);
    assert_eq!(case.points, all_points());
    assert_eq!(case.points.len(), 28);
    assert_eq!(case.settle, Duration::from_millis(1000));
    assert_eq!(case.regression, None);
    assert!(!case.description.is_empty());
    assert_eq!(case.runnable(), Ok(()));
}

#[test]
fn load_dir_finds_the_shipped_cases_sorted_and_skips_cargo_toml() {
    let cases = shipped();
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"memory-running"), "{names:?}");
    assert!(names.contains(&"memory-paused"), "{names:?}");
    assert!(!names.contains(&"Cargo"), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn trial_names() {
    let cases = shipped();
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.name == "memory-paused" || c.name == "memory-running")
        .collect();
    let matrix = trials("refvmm", &cases);
    assert_eq!(matrix.len(), 56);
    let names: Vec<String> = matrix.iter().map(|(id, _)| id.name()).collect();
    assert_eq!(names[0], "refvmm::memory-paused/no-fault");
    assert_eq!(names[1], "refvmm::memory-paused/kill-target@target-listen");
    assert_eq!(names[28], "refvmm::memory-running/no-fault");
    assert!(names.contains(&"refvmm::memory-running/kill-target@cpr-save".to_string()));
    assert!(
        names.contains(
            &"refvmm::memory-running/bad-request:no-main-channel@source-stop".to_string()
        )
    );
    for (id, case) in &matrix {
        assert_eq!(id.case, case.name);
        assert_eq!(id.vmm, "refvmm");
    }

    let legacy = trials("refvmm:legacy-stop-order", &cases);
    assert_eq!(
        legacy[0].0.name(),
        "refvmm:legacy-stop-order::memory-paused/no-fault"
    );
    assert_eq!(legacy[0].0.to_string(), legacy[0].0.name());
}

#[rstest]
fn trial_ids_round_trip(#[values("refvmm", "refvmm:legacy-stop-order", "qemu")] vmm: &str) {
    let cases = shipped();
    for (id, _) in trials(vmm, &cases) {
        assert_eq!(
            TrialId::parse(&id.name()),
            Some(id.clone()),
            "{}",
            id.name()
        );
    }
}

#[test]
fn trial_id_parses_its_parts() {
    assert_eq!(
        TrialId::parse("refvmm:legacy-stop-order::memory-paused/kill-target@cpr-save"),
        Some(TrialId {
            vmm: "refvmm:legacy-stop-order".into(),
            case: "memory-paused".into(),
            point: Some(FaultPoint {
                fault: Fault::KillTarget,
                step: Step::CprSave
            }),
            hop: 1,
        })
    );
    let hop2 = TrialId::parse("refvmm::chain/kill-target@cpr-save#2").unwrap();
    assert_eq!(hop2.hop, 2);
    assert_eq!(hop2.name(), "refvmm::chain/kill-target@cpr-save#2");
    assert_eq!(TrialId::parse("refvmm::chain/kill-target@cpr-save#1"), None);
    assert_eq!(
        TrialId::parse("refvmm::memory-running/bad-request:private-ram@source-stop")
            .unwrap()
            .point,
        Some(FaultPoint {
            fault: Fault::BadRequest(BadRequest::PrivateRam),
            step: Step::SourceStop
        })
    );
}

#[rstest]
#[case("")]
#[case("refvmm")]
#[case("refvmm::memory-running")]
#[case("::memory-running/no-fault")]
#[case("refvmm::/no-fault")]
#[case("refvmm:memory-running/no-fault")]
#[case("refvmm::memory-running/explode@cpr-save")]
#[case("refvmm::memory-running/cpr-close@main-stream")]
#[case("refvmm::memory-running/")]
fn bad_trial_ids_are_refused(#[case] name: &str) {
    assert_eq!(TrialId::parse(name), None);
}

#[test]
fn point_names() {
    assert_eq!(point_name(None), "no-fault");
    assert_eq!(
        point_name(Some(FaultPoint {
            fault: Fault::KillTarget,
            step: Step::CprSave
        })),
        "kill-target@cpr-save"
    );
}

#[test]
fn a_full_case_file() {
    let (_dir, path, case) = load_text(
        "regress-1.toml",
        r#"description = "A cancel right after the fds left."
profile = "memory"
guest = "paused"
points = ["kill-target@cpr-save", "no-fault", "cancel@target-init"]
settle-ms = 250
regression = "the source was resumed twice after a cancel"
"#,
    );
    let case = case.unwrap();
    assert_eq!(case.name, "regress-1");
    assert_eq!(case.path, path);
    assert_eq!(case.description, "A cancel right after the fds left.");
    assert_eq!(case.guest, GuestState::Paused);
    assert_eq!(
        case.points,
        vec![
            Some("kill-target@cpr-save".parse().unwrap()),
            None,
            Some("cancel@target-init".parse().unwrap()),
        ]
    );
    assert_eq!(case.settle, Duration::from_millis(250));
    assert_eq!(
        case.regression.as_deref(),
        Some("the source was resumed twice after a cancel")
    );
}

#[test]
fn a_vhost_user_case_runs_the_device_matrix_under_a_policy() {
    let (_dir, _path, case) = load_text(
        "vu.toml",
        "profile = \"vhost-user\"\nguest = \"running\"\npoints = \"all\"\n",
    );
    let case = case.unwrap();
    assert_eq!(case.profile, Profile::VhostUser);
    assert_eq!(case.runnable(), Ok(()));
    assert_eq!(case.device_policy, Some(Policy::Exclusive), "the default");
    assert_eq!(
        case.points.len(),
        34,
        "no-fault, 27 memory points, 6 device points"
    );
    assert!(
        case.points
            .iter()
            .any(|p| p.is_some_and(|p| p.to_string() == "device-busy@target-init"))
    );
    let (_dir, _path, shared) = load_text(
        "vus.toml",
        "profile = \"vhost-user\"\nguest = \"running\"\npoints = [\"no-fault\"]\ndevice-policy = \"shared\"\n",
    );
    assert_eq!(shared.unwrap().device_policy, Some(Policy::Shared));
}

#[test]
fn a_vhost_kernel_case_is_not_run_without_the_device() {
    let (_dir, _path, case) = load_text(
        "vk.toml",
        "profile = \"vhost-kernel\"\nguest = \"running\"\npoints = \"all\"\n",
    );
    let case = case.unwrap();
    assert_eq!(case.profile, Profile::VhostKernel);
    let why = case.runnable().unwrap_err();
    assert!(why.contains("vhost-kernel"), "{why}");
    assert!(why.contains("/dev/vhost-net"), "{why}");
}

const HEAD: &str = "description = \"x\"\nprofile = \"memory\"\n";

/// Each malformed file: its text, the line and field the error must name, and
/// a piece of the message.
#[rstest]
#[case::bad_syntax(
    "profile = \"memory\"\nguest = \"running\npoints = \"all\"\n",
    2,
    None,
    "bad TOML"
)]
#[case::unclosed_list(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\",\n",
    3,
    None,
    "unclosed array"
)]
#[case::duplicate_key(
    "profile = \"memory\"\nguest = \"running\"\nguest = \"paused\"\npoints = \"all\"\n",
    3,
    None,
    "duplicate key"
)]
#[case::unknown_fault(
    "description = \"x\"\nprofile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\", \"kill-target@cpr-save\", \"explode@cpr-save\"]\n",
    4,
    Some("points[2]"),
    "unknown fault `explode` (known: kill-target, "
)]
#[case::unknown_fault_on_its_own_line(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\n  \"no-fault\",\n  \"explode@cpr-save\",\n]\n",
    5,
    Some("points[1]"),
    "unknown fault `explode`"
)]
#[case::unknown_step(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"kill-target@nowhere\"]\n",
    3,
    Some("points[0]"),
    "unknown step `nowhere` (known: target-listen, "
)]
#[case::not_at_step(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"cpr-close@main-stream\"]\n",
    3,
    Some("points[0]"),
    "fault `cpr-close` cannot be injected at step `main-stream` (it can at: cpr-save)"
)]
#[case::no_at(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"kill-target\"]\n",
    3,
    Some("points[0]"),
    "`kill-target` is not a fault point"
)]
#[case::unknown_key(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\ncolour = \"red\"\n",
    4,
    Some("colour"),
    "unknown field `colour`, expected one of `description`, "
)]
#[case::unknown_table(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\n\n[extra]\nx = 1\n",
    5,
    Some("extra"),
    "unknown field `extra`"
)]
#[case::wrong_type(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\nsettle-ms = \"1s\"\n",
    4,
    Some("settle-ms"),
    "invalid type: string \"1s\", expected u64"
)]
#[case::wrong_type_enum(
    "profile = 3\nguest = \"running\"\npoints = \"all\"\n",
    1,
    Some("profile"),
    "invalid type: integer `3`, expected a string"
)]
#[case::wrong_type_description(
    "description = [\"a\"]\nprofile = \"memory\"\nguest = \"running\"\npoints = \"all\"\n",
    1,
    Some("description"),
    "invalid type: sequence, expected a string"
)]
#[case::wrong_type_point(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\", 7]\n",
    3,
    Some("points[1]"),
    "invalid type: integer `7`, expected a string"
)]
#[case::wrong_type_points(
    "profile = \"memory\"\nguest = \"running\"\npoints = true\n",
    3,
    Some("points"),
    "invalid type: boolean"
)]
#[case::points_not_all(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"kill-target@cpr-save\"\n",
    3,
    Some("points"),
    "`kill-target@cpr-save` is not \"all\""
)]
#[case::unknown_profile(
    "profile = \"vhost\"\nguest = \"running\"\npoints = \"all\"\n",
    1,
    Some("profile"),
    "unknown variant `vhost`, expected one of `memory`, `vhost-user`, `vhost-kernel`"
)]
#[case::missing_profile(
    "description = \"x\"\nguest = \"running\"\npoints = \"all\"\n",
    1,
    Some("profile"),
    "missing required field"
)]
#[case::missing_guest(
    "description = \"x\"\nprofile = \"memory\"\npoints = \"all\"\n",
    1,
    Some("guest"),
    "missing required field"
)]
#[case::missing_points(
    "description = \"x\"\nprofile = \"memory\"\nguest = \"running\"\n",
    1,
    Some("points"),
    "missing required field"
)]
#[case::empty_file("", 1, Some("profile"), "missing required field")]
#[case::duplicate_point(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\n  \"kill-target@cpr-save\",\n  \"no-fault\",\n  \"kill-target@cpr-save\",\n]\n",
    6,
    Some("points[2]"),
    "duplicate point `kill-target@cpr-save` (already listed as points[0])"
)]
#[case::duplicate_no_fault(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\", \"no-fault\"]\n",
    3,
    Some("points[1]"),
    "duplicate point `no-fault`"
)]
#[case::empty_list(
    "profile = \"memory\"\nguest = \"running\"\n\npoints = []\n",
    4,
    Some("points"),
    "no points"
)]
#[case::settle_too_small(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\nsettle-ms = 10\n",
    4,
    Some("settle-ms"),
    "10 is out of range: write 50 to 60000 (milliseconds)"
)]
#[case::settle_too_big(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\nsettle-ms = 60001\n",
    4,
    Some("settle-ms"),
    "60001 is out of range"
)]
#[case::settle_negative(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\nsettle-ms = -1\n",
    4,
    Some("settle-ms"),
    "invalid value: integer `-1`, expected u64"
)]
fn malformed_cases_name_file_line_and_field(
    #[case] text: &str,
    #[case] line: usize,
    #[case] field: Option<&str>,
    #[case] message: &str,
) {
    let (_dir, path, result) = load_text("bad.toml", text);
    let err = result.unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.file(), path, "{shown}");
    assert_eq!(err.line(), Some(line), "{shown}");
    assert_eq!(err.field(), field, "{shown}");
    let prefix = match field {
        Some(f) => format!("{}:{line}: field `{f}`: ", path.display()),
        None => format!("{}:{line}: ", path.display()),
    };
    assert!(
        shown.starts_with(&prefix),
        "{shown}\n  wanted prefix {prefix}"
    );
    assert!(shown.contains(message), "{shown}\n  wanted {message}");
}

/// The exact text of a few errors, with the path as the caller gave it.
#[rstest]
#[case(
    "description = \"x\"\nprofile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\", \"kill-target@cpr-save\", \"explode@cpr-save\"]\n",
    "cases/bad.toml:4: field `points[2]`: unknown fault `explode` (known: kill-target, kill-source, \
     hang-target, cancel, cpr-close, cpr-drop-fds, main-close, main-corrupt, \
     bad-request:no-main-channel, bad-request:non-unix-cpr, bad-request:private-ram, \
     device-busy, device-release-fail, device-disconnect, device-delay)"
)]
#[case(
    "description = \"x\"\nprofile = \"memory\"\nguest = \"sleeping\"\npoints = \"all\"\n",
    "cases/bad.toml:3: field `guest`: unknown variant `sleeping`, expected one of `running`, `paused`, `prelaunch`"
)]
#[case(
    "description = \"x\"\nguest = \"running\"\npoints = \"all\"\n",
    "cases/bad.toml:1: field `profile`: missing required field"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"kill-source@target-listen\"]\n",
    "cases/bad.toml:3: field `points[0]`: fault `kill-source` cannot be injected at step \
     `target-listen` (it can at: cpr-save, target-init, main-stream, target-resume)"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\nsettle_ms = 100\n",
    "cases/bad.toml:4: field `settle_ms`: unknown field `settle_ms`, expected one of \
     `description`, `profile`, `guest`, `points`, `settle-ms`, `capabilities`, `regression`, \
     `device-policy`, `device-backend`, `other-ram`, `source-devices`, `target-devices`, `target-start`, `on-failed-load`, `hops`"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\n  \"no-fault\",\n  \"device-busy@target-init\",\n]\n",
    "cases/bad.toml:5: field `points[1]`: `device-busy@target-init` needs a device: profile \
     `memory` has none (use `vhost-user` or `vhost-kernel`)"
)]
#[case(
    "profile = \"vhost-user\"\nguest = \"running\"\ndevice-backend = \"qemu-storage-daemon\"\npoints = [\"device-busy@target-init\"]\n",
    "cases/bad.toml:3: field `device-backend`: `device-busy@target-init` (points[0]) needs the kit's \
     own device; `qemu-storage-daemon` cannot inject it"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\ndevice-policy = \"shared\"\n",
    "cases/bad.toml:4: field `device-policy`: profile `memory` has no device to set a policy for"
)]
#[case(
    "profile = \"vhost-user\"\nguest = \"running\"\npoints = \"all\"\ndevice-policy = \"polite\"\n",
    "cases/bad.toml:4: field `device-policy`: unknown variant `polite`, expected `shared` or `exclusive`"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\npoints = \"all\"\n",
    "cases/bad.toml:2: bad TOML: invalid basic string, expected `\"`"
)]
fn exact_error_text(#[case] text: &str, #[case] want: &str) {
    let err = Case::parse(Path::new("cases/bad.toml"), text).unwrap_err();
    assert_eq!(err.to_string(), want);
}

#[test]
fn a_head_of_good_fields_does_not_hide_a_later_error() {
    let text = format!("{HEAD}guest = \"running\"\npoints = [\"hang-target@cleanup\"]\n");
    let err = Case::parse(Path::new("x.toml"), &text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.toml:4: field `points[0]`: fault `hang-target` cannot be injected at step `cleanup` \
         (it can at: target-listen, cpr-save, target-init, main-stream, target-resume)"
    );
}

#[test]
fn a_missing_file_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = Case::load(&path).unwrap_err();
    assert!(matches!(err, CaseError::Io { .. }), "{err:?}");
    assert_eq!(err.file(), path);
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", path.display()))
    );
}

#[test]
fn a_file_name_that_cannot_be_a_case_name_is_refused() {
    let (_dir, path, result) = load_text(
        "two words.toml",
        "profile = \"memory\"\nguest = \"running\"\npoints = \"all\"\n",
    );
    let err = result.unwrap_err();
    assert!(matches!(err, CaseError::BadName { .. }), "{err:?}");
    assert_eq!(err.file(), path);
}

const GOOD: &str = "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\"]\n";

#[test]
fn load_dir_is_recursive_and_sorted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("regressions/deeper")).unwrap();
    fs::create_dir_all(root.join("tests")).unwrap();
    fs::create_dir_all(root.join(".hidden")).unwrap();
    fs::write(root.join("zeta.toml"), GOOD).unwrap();
    fs::write(root.join("regressions/alpha.toml"), GOOD).unwrap();
    fs::write(root.join("regressions/deeper/mid.toml"), GOOD).unwrap();
    // The cases directory holds only data: a user's folder named `tests`
    // (or `src`, `target`) is cases like any other.
    fs::write(root.join("tests/beta.toml"), GOOD).unwrap();
    fs::write(root.join("notes.txt"), "not a case").unwrap();
    // Not cases: files that are not *.toml, and anything in a hidden directory.
    fs::write(root.join(".hidden/junk.toml"), "junk").unwrap();

    let cases = load_dir(root).unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "mid", "zeta"]);
    assert_eq!(cases[2].path, root.join("regressions/deeper/mid.toml"));
}

#[test]
fn load_dir_reports_the_first_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("regressions")).unwrap();
    fs::write(dir.path().join("good.toml"), GOOD).unwrap();
    let bad = dir.path().join("regressions/bad.toml");
    fs::write(
        &bad,
        "profile = \"memory\"\nguest = \"asleep\"\npoints = \"all\"\n",
    )
    .unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: field `guest`: unknown variant `asleep`, expected one of `running`, `paused`, `prelaunch`",
            bad.display()
        )
    );
}

#[test]
fn duplicate_case_names_across_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("regressions")).unwrap();
    let first = dir.path().join("memory-running.toml");
    let second = dir.path().join("regressions/memory-running.toml");
    fs::write(&first, GOOD).unwrap();
    fs::write(&second, GOOD).unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    let shown = err.to_string();
    match &err {
        CaseError::DuplicateName {
            name,
            first: a,
            second: b,
        } => {
            assert_eq!(name, "memory-running");
            let mut both = [a.clone(), b.clone()];
            both.sort();
            let mut want = [first.clone(), second.clone()];
            want.sort();
            assert_eq!(both, want);
        }
        other => panic!("not a duplicate-name error: {other:?}"),
    }
    assert!(shown.contains(&first.display().to_string()), "{shown}");
    assert!(shown.contains(&second.display().to_string()), "{shown}");
    assert!(shown.contains("memory-running"), "{shown}");
}

#[test]
fn a_missing_dir_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    let err = load_dir(&gone).unwrap_err();
    assert!(matches!(err, CaseError::Io { .. }), "{err:?}");
    assert_eq!(err.file(), gone);
}

#[test]
fn a_case_can_ask_for_migration_capabilities() {
    let case = Case::parse(
        Path::new("cases/rp.toml"),
        "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\"]\ncapabilities = [\"return-path\"]\n",
    )
    .unwrap();
    assert_eq!(case.capabilities, ["return-path"]);
    let shipped = shipped()
        .into_iter()
        .find(|c| c.name == "memory-running-return-path")
        .unwrap();
    assert_eq!(shipped.capabilities, ["return-path"]);
    let err = Case::parse(
        Path::new("cases/rp.toml"),
        "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\"]\ncapabilities = \"return-path\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("cases/rp.toml:4: field `capabilities`:"),
        "{err}"
    );
}

#[test]
fn a_case_says_its_scenario() {
    use cprkit_harness::scenario::{ExtraDevice, OnFailedLoad, TargetStart};
    let case = Case::parse(
        Path::new("cases/sc.toml"),
        "profile = \"memory\"\nguest = \"prelaunch\"\nother-ram = \"target\"\n\
         source-devices = [\"rng\"]\ntarget-start = \"deferred\"\non-failed-load = \"stay\"\n\
         hops = 3\npoints = [\"no-fault\", \"kill-target@cpr-save#2\", \"kill-target@cpr-save\"]\n",
    )
    .unwrap();
    assert_eq!(case.guest, GuestState::Prelaunch);
    let sc = &case.scenario;
    assert!(sc.target.other_ram && !sc.source.other_ram);
    assert_eq!(sc.source.devices, [ExtraDevice::Rng]);
    assert!(sc.target.devices.is_empty());
    assert_eq!(sc.target_start, TargetStart::Deferred);
    assert_eq!(sc.on_failed_load, OnFailedLoad::Stay);
    assert_eq!(sc.hops, 3);
    assert_eq!(case.point_hops, [1, 2, 1]);
    let names: Vec<String> = cprkit_suite::trials("refvmm", std::slice::from_ref(&case))
        .into_iter()
        .map(|(id, _)| id.name())
        .collect();
    assert_eq!(
        names,
        [
            "refvmm::sc/no-fault",
            "refvmm::sc/kill-target@cpr-save#2",
            "refvmm::sc/kill-target@cpr-save"
        ]
    );
    // The defaults: one plain handover.
    let plain = Case::parse(
        Path::new("cases/p.toml"),
        "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\"]\n",
    )
    .unwrap();
    assert_eq!(
        plain.scenario,
        cprkit_harness::scenario::Scenario::default()
    );
}

#[rstest]
#[case(
    "profile = \"memory\"\nguest = \"running\"\nhops = 3\npoints = [\"no-fault\", \"cancel@cpr-save#4\"]\n",
    "cases/bad.toml:4: field `points[1]`: hop #4 is past the case's last: it makes 3 handover(s) (`hops`)"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\npoints = [\"cancel@cpr-save#0\"]\n",
    "cases/bad.toml:3: field `points[0]`: `cancel@cpr-save#0`: write FAULT@STEP#N with N a hop from 1 (e.g. kill-target@cpr-save#2)"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\nhops = 9\npoints = [\"no-fault\"]\n",
    "cases/bad.toml:3: field `hops`: 9 is out of range: write 1 to 8 (handovers in a row)"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\nother-ram = \"both\"\npoints = [\"no-fault\"]\n",
    "cases/bad.toml:3: field `other-ram`: unknown side `both`, expected `source` or `target`"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\ntarget-start = \"later\"\npoints = [\"no-fault\"]\n",
    "cases/bad.toml:3: field `target-start`: unknown variant `later`, expected `listening` or `deferred`"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\nsource-devices = [\"gpu\"]\npoints = [\"no-fault\"]\n",
    "cases/bad.toml:3: field `source-devices`: unknown variant `gpu`, expected `rng`"
)]
#[case(
    "profile = \"memory\"\nguest = \"running\"\nhops = 2\npoints = [\"no-fault\", \"no-fault#2\"]\n",
    "cases/bad.toml:4: field `points[1]`: `no-fault#2`: write FAULT@STEP#N with N a hop from 1 (e.g. kill-target@cpr-save#2)"
)]
fn bad_scenario_keys_name_file_line_and_field(#[case] text: &str, #[case] want: &str) {
    let err = Case::parse(Path::new("cases/bad.toml"), text)
        .unwrap_err()
        .to_string();
    assert_eq!(err, want);
}
