//! The executor on a mocked host: each step is on disk as `started`, with its inverse,
//! before the host sees it; a failure undoes the completed steps in reverse order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vm_device::plan::{Action, Executor, GroupLock, Journal, Plan, Step};
use vm_device_host::mock::MockHost;
use vm_device_host::HostError;

fn write(path: &str, value: &str) -> Action {
    Action::Write {
        path: PathBuf::from(path),
        value: value.into(),
    }
}

fn plan() -> Plan {
    let step = |n: u32| {
        Step::new(
            write(&format!("/sys/a{n}"), "on"),
            Some(write(&format!("/sys/a{n}"), "off")),
            format!("dev{n}"),
            format!("step {n}"),
        )
    };
    Plan {
        subject: "test".into(),
        key: "group-1".into(),
        steps: vec![step(1), step(2), step(3)],
        origin: Vec::new(),
    }
}

#[test]
fn each_step_is_journaled_before_the_host_sees_it_and_undone_in_reverse() {
    let state = tempfile::tempdir().unwrap();
    let journal_path = Journal::path_for(state.path(), "group-1");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut host = MockHost::new();
    let (jp, log) = (journal_path.clone(), seen.clone());
    host.expect_write_attr().returning(move |path, value| {
        let value = String::from_utf8_lossy(value).into_owned();
        log.lock()
            .unwrap()
            .push(format!("{}={value}", path.display()));
        if value == "on" {
            // The journal on disk already names this step and its inverse.
            let j: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&jp).unwrap()).unwrap();
            let last = j["steps"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(last["status"], "started");
            assert_eq!(last["step"]["action"]["path"], path.display().to_string());
            assert_eq!(last["step"]["inverse"]["value"], "off");
        }
        if path == Path::new("/sys/a3") && value == "on" {
            return Err(HostError::errno("write", path, 16));
        }
        Ok(())
    });
    host.expect_read()
        .returning(|p| Err(HostError::errno("read", p, 2)));
    let journal = Journal::new(state.path(), "group-1", "test", &host, Vec::new());
    let lock = GroupLock::try_acquire(state.path(), "group-1").unwrap();
    let mut exec = Executor::new(journal, lock);
    let err = exec.apply(&host, &plan()).unwrap_err();
    assert_eq!(err.index, 2);
    assert_eq!(err.error.errno(), Some(16));
    assert!(err.undo.complete(), "{:?}", err.undo);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "/sys/a1=on",
            "/sys/a2=on",
            "/sys/a3=on",
            "/sys/a2=off",
            "/sys/a1=off"
        ],
        "the refused step is not undone; the others are, newest first"
    );
    assert!(
        !journal_path.exists(),
        "a complete undo deletes the journal"
    );
}

#[test]
fn an_inverse_that_fails_stops_the_undo_and_stays_in_the_journal() {
    let state = tempfile::tempdir().unwrap();
    let mut host = MockHost::new();
    host.expect_write_attr()
        .returning(|path, value| match (path.to_str().unwrap(), value) {
            ("/sys/a3", b"on") => Err(HostError::errno("write", path, 5)),
            ("/sys/a2", b"off") => Err(HostError::errno("write", path, 16)),
            _ => Ok(()),
        });
    host.expect_read()
        .returning(|p| Err(HostError::errno("read", p, 2)));
    let journal = Journal::new(state.path(), "group-1", "test", &host, Vec::new());
    let lock = GroupLock::try_acquire(state.path(), "group-1").unwrap();
    let mut exec = Executor::new(journal, lock);
    let err = exec.apply(&host, &plan()).unwrap_err();
    assert!(!err.undo.complete());
    assert_eq!(err.undo.failures.len(), 1);
    assert_eq!(err.undo.failures[0].step.device, "dev2");
    let kept = Journal::load(&Journal::path_for(state.path(), "group-1")).unwrap();
    let devices: Vec<&str> = kept.steps.iter().map(|s| s.step.device.as_str()).collect();
    assert_eq!(
        devices,
        ["dev1", "dev2"],
        "dev1 was not undone past the failure"
    );
}
