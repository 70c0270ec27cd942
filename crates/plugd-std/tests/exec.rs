//! The process runner: the exec conformance suite, and what only process groups and resource
//! limits can do (a background child does not outlive its call, the whole group dies at a
//! timeout, an overflow or a dropped call, every process gets the limits).
#![cfg(unix)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use plugd_core::{
    AuditLog, Auditor, Exec, ExecGrant, ExecLimits, ExecRule, HostError, PluginState,
};
use plugd_std::ProcessRunner;

fn exec(dir: &Path, allow: &[&str]) -> (Exec, Arc<PluginState>, Arc<AuditLog>) {
    exec_with(
        dir,
        ExecGrant::new(allow.iter().map(|&c| ExecRule::from(c))),
    )
}

fn exec_with(dir: &Path, grant: ExecGrant) -> (Exec, Arc<PluginState>, Arc<AuditLog>) {
    let state = Arc::new(PluginState::default());
    let log = Arc::new(AuditLog::default());
    let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
    (
        Exec::new(
            "p",
            grant,
            dir.to_path_buf(),
            Arc::new(ProcessRunner),
            auditor,
        ),
        state,
        log,
    )
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_process_runner_conforms() {
    let scratch = tempfile::tempdir().unwrap();
    plugd_core::testing::command_runner(Arc::new(ProcessRunner), scratch.path()).await;
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
    }
}

#[tokio::test]
async fn a_background_child_does_not_outlive_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (exec, _, _) = exec(dir.path(), &["sh"]);
    // Detached from the pipes (the call returns at once), then holding them.
    for script in [
        "sleep 60 </dev/null >/dev/null 2>&1 & echo $!",
        "sleep 60 & echo $!",
    ] {
        let out = exec
            .run(
                "sh",
                &args(&["-c", script]),
                b"",
                Some(Duration::from_secs(10)),
            )
            .await
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // SIGKILL went to the group before `run` returned; the kernel ends the process
        // at its next scheduling (it runs no code of its own after the signal).
        assert!(
            dies(pid).await,
            "{script}: the background sleep ({pid}) survived the call"
        );
    }
}

/// Wait (at most 10 s) for `pid` to die; whether it did.
async fn dies(pid: i32) -> bool {
    for _ in 0..1000 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The PID a script wrote to `bg.pid` in `dir`, once it has.
fn written_pid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("bg.pid")).ok()?;
    text.strip_suffix('\n')?.parse().ok()
}

#[tokio::test]
async fn a_timeout_an_output_overflow_or_a_dropped_call_kills_the_whole_group() {
    // Each script leaves a grandchild that holds no pipe and records its PID.
    let background = "sleep 60 </dev/null >/dev/null 2>&1 & echo $! > bg.pid";

    let dir = tempfile::tempdir().unwrap();
    let (sh, _, _) = exec(dir.path(), &["sh"]);
    let script = format!("{background}; sleep 60");
    let e = sh
        .run(
            "sh",
            &args(&["-c", &script]),
            b"",
            Some(Duration::from_secs(2)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        HostError::Failed(
            "exec of plugin 'p': 'sh' did not finish within 2s and was killed".into()
        )
    );
    let pid = written_pid(dir.path()).expect("the script wrote its child's PID");
    assert!(dies(pid).await, "timeout: the grandchild {pid} survived");

    let dir = tempfile::tempdir().unwrap();
    let (sh, _, _) = exec(dir.path(), &["sh"]);
    let script = format!("{background}; exec yes");
    let e = sh
        .with_max_output(64 * 1024)
        .run("sh", &args(&["-c", &script]), b"", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HostError::Failed(m) if m.ends_with("to stdout (the cap) and was killed")),
        "{e:?}"
    );
    let pid = written_pid(dir.path()).expect("the script wrote its child's PID");
    assert!(dies(pid).await, "overflow: the grandchild {pid} survived");

    let dir = tempfile::tempdir().unwrap();
    let (sh, _, _) = exec(dir.path(), &["sh"]);
    let script = format!("{background}; sleep 60");
    let argv = args(&["-c", &script]);
    let mut run = Box::pin(sh.run("sh", &argv, b"", None));
    let pid = loop {
        tokio::select! {
            r = &mut run => panic!("the call ended: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                if let Some(pid) = written_pid(dir.path()) {
                    break pid;
                }
            }
        }
    };
    drop(run);
    assert!(
        dies(pid).await,
        "dropped call: the grandchild {pid} survived"
    );
}

#[tokio::test]
async fn the_limits_apply_to_every_process_of_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ExecLimits {
        memory_mb: 512,
        file_size_mb: 1,
        processes: 32,
        open_files: 100,
    };
    let (exec, _, _) = exec_with(
        dir.path(),
        ExecGrant {
            allow: vec!["sh".into(), "cat".into()],
            limits,
        },
    );
    let exec = exec.with_timeout(Duration::from_millis(2500));
    assert_eq!(exec.limits(), limits);
    // In sh: -v in KiB, -f in 512-byte blocks (POSIX; bash without --posix counts KiB),
    // -t in seconds (the timeout rounded up).
    let out = exec
        .run(
            "sh",
            &args(&[
                "-c",
                "ulimit -v; ulimit -n; ulimit -t; ulimit -c; ulimit -f",
            ]),
            b"",
            None,
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..4], ["524288", "100", "3", "0"], "{text}");
    assert!(matches!(lines[4], "2048" | "1024"), "ulimit -f: {text}");
    // The same in bytes, soft and hard, as the kernel has them.
    let out = exec
        .run("cat", &args(&["/proc/self/limits"]), b"", None)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let limit = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(limit("Max cpu time"), "3 3");
    assert_eq!(limit("Max file size"), "1048576 1048576");
    assert_eq!(limit("Max processes"), "32 32");
    assert_eq!(limit("Max open files"), "100 100");
    assert_eq!(limit("Max address space"), "536870912 536870912");
    assert_eq!(limit("Max core file size"), "0 0");

    // Past the file size limit a write fails (SIGXFSZ ends the writer).
    let out = exec
        .run(
            "sh",
            &args(&["-c", "head -c 2000000 /dev/zero > big; echo $?"]),
            b"",
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "153\n",
        "128 + SIGXFSZ"
    );
    let big = std::fs::metadata(dir.path().join("big")).unwrap().len();
    assert_eq!(big, 1024 * 1024, "the file stops at the limit");
}
