//! Issue 12: the state directory, its journals and locks attacked as someone who can write
//! there would, and the simulated runs that must never reach the real host. Every test runs
//! `vm-cli` as a separate process, as an attacker's victim would.

mod mdev_common;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vm-cli"));
    c.env_remove("VM_HOST_ROOT")
        .env_remove("VM_STATE_DIR")
        .env_remove("VM_SIM_STATE")
        .env_remove("VM_CONFIG_ROOT")
        .env_remove("VM_DEVICE_STEP_DELAY_MS");
    c
}

fn sim(root: &str, state: &Path, args: &[&str]) -> Output {
    cli()
        .args(["--host-root", root, "--state-dir"])
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What a simulated host of `root` writes as its identity in a journal.
fn tree_id(root: &str) -> String {
    format!(
        "host tree {}",
        std::fs::canonicalize(root).unwrap().display()
    )
}

/// A journal as vm-device writes it, with one done step whose undo is `inverse`.
fn journal(key: &str, host: &str, inverse: Value) -> Value {
    json!({
        "schema": 1, "key": key, "host": host, "subject": "crafted",
        "owner": {"pid": 999_999_999u32, "start_time": null, "program": "x"},
        "detached": false, "state": "applying", "origin": [],
        "steps": [{"index": 0, "status": "done", "step": {
            "action": {"op": "write", "path": "/sys/bus/pci/drivers_probe", "value": "0000:01:00.0"},
            "inverse": inverse, "device": "0000:01:00.0", "why": "crafted"}}]
    })
}

fn plant(state: &Path, name: &str, j: &Value) -> PathBuf {
    let dir = state.join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(j).unwrap()).unwrap();
    p
}

fn victim(dir: &Path) -> PathBuf {
    let v = dir.join("victim");
    std::fs::write(&v, "precious").unwrap();
    v
}

#[test]
fn a_planted_temp_journal_link_is_not_followed() {
    let base = tempfile::tempdir().unwrap();
    let v = victim(base.path());
    let state = base.path().join("state");
    std::fs::create_dir_all(state.join("journal")).unwrap();
    symlink(&v, state.join("journal/.group-7.json.tmp")).unwrap();
    let o = sim(Q35, &state, &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious");
}

#[test]
fn a_planted_lock_link_is_refused_and_not_followed() {
    let base = tempfile::tempdir().unwrap();
    let v = victim(base.path());
    let state = base.path().join("state");
    std::fs::create_dir_all(state.join("locks")).unwrap();
    symlink(&v, state.join("locks/group-7")).unwrap();
    let o = sim(Q35, &state, &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("symbolic link"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious");
}

#[test]
fn under_umask_000_directories_are_0700_and_files_0600() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_vm-cli"))
        .args(["--host-root", Q35, "--state-dir"])
        .arg(&state)
        .args(["gpu", "prepare", "0000:01:00.0"])
        .env_remove("VM_STATE_DIR")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(state.clone()), 0o700);
    assert_eq!(mode(state.join("journal")), 0o700);
    assert_eq!(mode(state.join("locks")), 0o700);
    assert_eq!(mode(state.join("journal/group-7.json")), 0o600);
    assert_eq!(mode(state.join("locks/group-7")), 0o600);
}

#[test]
fn a_group_or_world_writable_state_dir_is_refused_with_the_remedy() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = sim(Q35, &state, &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("chmod go-w"), "{}", text(&o));
    assert!(!state.join("journal").exists(), "nothing written");
    // A journal planted there is not replayed either.
    plant(
        &state,
        "group-7.json",
        &journal("group-7", &tree_id(Q35), json!(null)),
    );
    let o = sim(Q35, &state, &["gpu", "restore"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn a_state_dir_owned_by_another_user_is_refused() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let o = sim(Q35, &state, &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("owned by uid 65534"), "{}", text(&o));
}

#[test]
fn a_key_that_is_not_the_file_name_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let inverse = json!({"op": "write", "path": "/sys/bus/pci/drivers/bochs-drm/bind", "value": "0000:01:00.0"});
    plant(
        &state,
        "group-1.json",
        &journal("../../escaped", &tree_id(Q35), inverse),
    );
    let o = sim(Q35, &state, &["gpu", "restore"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is not its file name"), "{}", text(&o));
    assert!(!base.path().join("escaped").exists());
    assert!(!state.join("locks/../../escaped").exists());
}

#[test]
fn restore_replays_only_what_the_plan_layer_produces() {
    let base = tempfile::tempdir().unwrap();
    let v = victim(base.path());
    let state = base.path().join("state");
    for (i, inverse) in [
        json!({"op": "remove_file", "path": v}),
        json!({"op": "write", "path": v, "value": "owned"}),
        json!({"op": "write", "path": "/sys/bus/pci/drivers/../../../../etc/x/bind", "value": "0000:01:00.0"}),
        json!({"op": "load_module", "name": "evil"}),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("group-{}", 90 + i);
        plant(
            &state,
            &format!("{key}.json"),
            &journal(&key, &tree_id(Q35), inverse),
        );
    }
    let o = sim(Q35, &state, &["gpu", "restore"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(text(&o).matches("refused").count(), 4, "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious");
}

#[test]
fn a_simulated_hosts_journal_is_refused_by_the_real_restore() {
    let base = tempfile::tempdir().unwrap();
    let v = victim(base.path());
    let state = base.path().join("state");
    // A journal a simulation left (its inverse deletes a file, which restore also refuses:
    // the host check comes first, and nothing is touched on this machine).
    plant(
        &state,
        "group-1.json",
        &journal(
            "group-1",
            &tree_id(Q35),
            json!({"op": "remove_file", "path": v}),
        ),
    );
    let o = cli()
        .arg("--state-dir")
        .arg(&state)
        .args(["gpu", "restore"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("belongs to another host"), "{}", text(&o));
    assert!(text(&o).contains("--host-root"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious");
}

#[test]
fn a_simulated_prepare_journals_with_the_simulation_not_in_the_real_state_dir() {
    let base = tempfile::tempdir().unwrap();
    let sim_state = base.path().join("sim");
    let o = cli()
        .args(["--host-root", Q35, "--sim-state"])
        .arg(&sim_state)
        .args(["gpu", "prepare", "0000:01:00.0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: Value = serde_json::from_slice(
        &std::fs::read(sim_state.join("state/journal/group-7.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(j["host"], tree_id(Q35).as_str());
}

#[test]
fn restore_of_a_state_dir_that_is_a_file_or_an_unreadable_journal_dir_exits_1() {
    let base = tempfile::tempdir().unwrap();
    let file = base.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = sim(Q35, &file, &["gpu", "restore"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!text(&o).contains("nothing to restore"), "{}", text(&o));
    let state = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("journal"), "not a directory").unwrap();
    let o = sim(Q35, &state, &["gpu", "restore"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

fn persistent(sim_state: &Path, args: &[&str]) -> Output {
    cli()
        .args(["--host-root", Q35, "--sim-state"])
        .arg(sim_state)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_undo_already_done_by_hand_is_skipped_and_the_journal_dropped() {
    let base = tempfile::tempdir().unwrap();
    let s = base.path().join("sim");
    let o = persistent(&s, &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let jp = s.join("state/journal/group-7.json");
    let saved = std::fs::read(&jp).unwrap();
    let o = persistent(&s, &["gpu", "release", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The devices are back (as if by hand), but the journal says they are not.
    std::fs::write(&jp, &saved).unwrap();
    let o = persistent(&s, &["gpu", "release", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("already undone by hand"), "{}", text(&o));
    assert!(!jp.exists(), "the journal is dropped");
}

#[test]
fn release_refuses_an_address_its_groups_journal_does_not_list() {
    let base = tempfile::tempdir().unwrap();
    let s = base.path().join("sim");
    let o = persistent(&s, &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The same group number, but a journal about other devices (hot-plug, reboot).
    let jp = s.join("state/journal/group-7.json");
    let mut j: Value = serde_json::from_slice(&std::fs::read(&jp).unwrap()).unwrap();
    for st in j["steps"].as_array_mut().unwrap() {
        st["step"]["device"] = json!("0000:09:00.0");
    }
    std::fs::write(&jp, serde_json::to_vec(&j).unwrap()).unwrap();
    let o = persistent(&s, &["gpu", "release", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not in the journal"), "{}", text(&o));
    assert!(jp.exists());
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(mut c: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = c.wait();
}

#[test]
fn prepare_kill_9_restore_and_list_as_separate_processes() {
    let base = tempfile::tempdir().unwrap();
    let s = base.path().join("sim");
    let child = cli()
        .args(["--host-root", Q35, "--sim-state"])
        .arg(&s)
        .args(["gpu", "prepare", "0000:01:00.0"])
        .env("VM_DEVICE_STEP_DELAY_MS", "3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let jp = s.join("state/journal/group-7.json");
    wait_for("a done step", || {
        std::fs::read(&jp)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|j| {
                j["steps"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s["status"] == "done"))
            })
    });
    kill9(child);
    let o = persistent(&s, &["gpu", "list", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    let h = &v["passthrough_holders"][0];
    assert_eq!(h["key"], "group-7", "{v}");
    assert_eq!(h["owner_status"], "dead", "liveness from the real /proc");
    assert_eq!(h["stale"], true);
    let o = persistent(&s, &["gpu", "restore"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("host as it was"), "{}", text(&o));
    assert!(!jp.exists());
    let o = persistent(&s, &["gpu", "list", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passthrough_holders"], json!([]), "{v}");
    // The device is back on its driver in the persisted host: a new plan starts there.
    let o = persistent(&s, &["gpu", "prepare", "0000:01:00.0", "--dry-run"]);
    assert!(
        text(&o).contains("/sys/bus/pci/drivers/bochs-drm/unbind"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_full_state_dir_changes_nothing_exits_4_and_leaves_no_temp_file() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    // Writes beyond 0 bytes fail (EFBIG), as on a full file system.
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 0; trap '' XFSZ; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_vm-cli"))
        .args(["--host-root", Q35, "--state-dir"])
        .arg(&state)
        .args(["gpu", "prepare", "0000:01:00.0"])
        .env_remove("VM_STATE_DIR")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(!text(&o).contains("gpu restore"), "{}", text(&o));
    let left: Vec<_> = std::fs::read_dir(state.join("journal"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

fn mdev_create(s: &Path, ty: &str, delay_ms: u32) -> Child {
    cli()
        .args(["--host-root", mdev_common::QEMU_LAB, "--sim-state"])
        .arg(s)
        .args(["gpu", "mdev-create", "--mdev-type", ty])
        .env("VM_DEVICE_STEP_DELAY_MS", delay_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lock_taken(s: &Path) -> bool {
    std::fs::read_to_string(s.join("state/locks/mdev-mbochs")).is_ok_and(|t| !t.trim().is_empty())
}

#[test]
fn concurrent_mdev_creates_on_one_parent_wait_and_both_succeed() {
    let base = tempfile::tempdir().unwrap();
    let s = base.path().join("sim");
    let first = mdev_create(&s, "mbochs-small", 1500);
    wait_for("the first to lock mbochs", || lock_taken(&s));
    let second = mdev_create(&s, "mbochs-small", 0);
    let (a, b) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let list = cli()
        .args(["--host-root", mdev_common::QEMU_LAB, "--sim-state"])
        .arg(&s)
        .args(["gpu", "mdev-list", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&list.stdout)
            .matches("mbochs-small")
            .count(),
        2,
        "{}",
        text(&list)
    );
}

#[test]
fn a_real_mdev_conflict_exits_3_naming_the_parent() {
    let base = tempfile::tempdir().unwrap();
    let s = base.path().join("sim");
    // mbochs-large has 4 instances: leave one.
    for _ in 0..3 {
        let o = mdev_create(&s, "mbochs-large", 0)
            .wait_with_output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let first = mdev_create(&s, "mbochs-large", 1500);
    wait_for("the first to lock mbochs", || {
        std::fs::read_to_string(s.join("changes.jsonl")).is_ok_and(|t| t.lines().count() >= 4)
    });
    let second = mdev_create(&s, "mbochs-large", 0);
    let (a, b) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(3), "{}", text(&b));
    let msg = text(&b);
    assert!(msg.contains("mbochs"), "{msg}");
    assert!(
        !msg.contains("IOMMU group") && !msg.contains("journal"),
        "{msg}"
    );
}

#[test]
fn state_files_belong_to_this_user() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let o = sim(Q35, &state, &["gpu", "prepare", "0000:01:00.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        std::fs::metadata(state.join("journal/group-7.json"))
            .unwrap()
            .uid(),
        uid
    );
}
