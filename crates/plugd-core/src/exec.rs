//! The `exec` capability: commands the operator allowed in the plugin entry's `exec.allow`,
//! with the arguments the entry allows, and nothing else.
//!
//! **An entry that allows a general program with any arguments grants whatever that program
//! can do.** `git` runs any command (`-c core.sshCommand=…`, `--upload-pack=…`) and reads any
//! file (`diff --no-index`); a shell or an interpreter runs anything; ImageMagick writes any
//! path. Each is code execution as the user plugd runs as, which reaches the admin token, every
//! plugin's data and the compiled-code cache. Pin the arguments ([`ExecRule`]).
//!
//! # What a call may run
//!
//! The command must equal an entry's `command` exactly (`git` allows `git`, not
//! `/usr/bin/git`), and its arguments must match that entry's patterns position by position
//! (see [`ExecRule`]: literal or `*`/`?` globs, exactly as many arguments unless `extra_args`,
//! and a pattern not starting with `-` never matches an argument that does). Anything else is
//! refused before a process starts ([`HostError::Denied`], counted against the plugin and
//! audited): `exec denied: plugin 'NAME' may not run 'CMD' (not in exec.allow)`, or
//! `exec denied: plugin 'NAME' may not run 'CMD' with argument N 'ARG' (plugins.plugins[].exec.allow allows: …)`.
//!
//! # How it runs
//!
//! Without a shell, with an empty environment except `PATH=`[`PATH`], the plugin's data
//! directory (`<data_dir>/plugins/<name>`) as its working directory, and the call's bytes as its
//! standard input. Each command is the leader of a process group of its own, and the whole
//! group is killed (SIGKILL):
//!
//! - at its timeout (the call's own, capped by [`DEFAULT_TIMEOUT`] or the handle's shorter one);
//! - when it writes more than [`MAX_OUTPUT_BYTES`] to stdout or stderr;
//! - when the call is dropped (the guest's deadline, a reload);
//! - when the command exits: a child it left behind (`sleep 60 &`, a daemon) does not survive
//!   the call. Output a child wrote before that is kept.
//!
//! The group is killed while its leader is still unreaped, so the group ID cannot have been
//! reused by an unrelated process. A process that leaves the group (`setsid`, `setpgid`)
//! escapes these kills (if it keeps the output pipes open, the call waits for them until its
//! timeout); its CPU time is still capped (below), and only a cgroup or a namespace would hold
//! it.
//!
//! Every process starts with resource limits ([`ExecLimits`], per plugin in
//! `exec.limits`): `RLIMIT_AS` (address space, default 1 GiB), `RLIMIT_FSIZE` (largest file
//! written, default 64 MiB; past it the write fails with SIGXFSZ), `RLIMIT_NPROC` (default 64;
//! Linux counts every process and thread of plugd's user, and root is exempt), `RLIMIT_NOFILE`
//! (default 256), `RLIMIT_CORE` 0, and `RLIMIT_CPU` the call's timeout rounded up to seconds.
//! Soft and hard limits are equal, so the command cannot raise them; a limit above plugd's own
//! hard limit is lowered to it.
//!
//! Exec runs on Unix only: elsewhere a call is `unsupported`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plugd_manifest::{ExecGrant, ExecLimits, ExecRule};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::audit::Auditor;
use crate::error::HostError;

/// The longest a command may run, and the default when the call gives no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a command may write to stdout, and to stderr (1 MiB each).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The only environment variable a command gets.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What a finished command left (the WIT `command-output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit status; the negated signal number when a signal ended it.
    pub status: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

#[derive(Debug)]
struct Inner {
    plugin: Arc<str>,
    allow: Vec<ExecRule>,
    limits: ExecLimits,
    work_dir: PathBuf,
    auditor: Auditor,
}

/// One plugin's command runner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exec {
    inner: Arc<Inner>,
    timeout: Duration,
    max_output: usize,
}

/// Why reading a stream stopped early.
struct Overflow(&'static str);

impl Exec {
    /// A runner for `plugin` limited to what `grant` allows, running in `work_dir` (which must
    /// exist). The grant is taken as it is: the host config reader and [`check_entry`]
    /// refuse a bad one ([`ExecGrant::check`]).
    ///
    /// [`check_entry`]: crate::check_entry
    pub fn new(plugin: &str, grant: ExecGrant, work_dir: PathBuf, auditor: Auditor) -> Exec {
        Exec {
            inner: Arc::new(Inner {
                plugin: Arc::from(plugin),
                allow: grant.allow,
                limits: grant.limits,
                work_dir,
                auditor,
            }),
            timeout: DEFAULT_TIMEOUT,
            max_output: MAX_OUTPUT_BYTES,
        }
    }

    /// The same runner with commands limited to `timeout` (never longer than this handle's).
    pub fn with_timeout(&self, timeout: Duration) -> Exec {
        Exec {
            timeout: timeout.min(self.timeout),
            ..self.clone()
        }
    }

    /// The same runner with output limited to `bytes` per stream (never more than this handle's).
    pub fn with_max_output(&self, bytes: usize) -> Exec {
        Exec {
            max_output: bytes.min(self.max_output),
            ..self.clone()
        }
    }

    /// The entries of `exec.allow`; each displays as what it allows (`git status --porcelain`,
    /// `git <any arguments>`).
    ///
    /// ```
    /// use plugd_core::{Auditor, Exec, ExecGrant, ExecRule};
    /// let grant = ExecGrant::new([ExecRule::pinned("git", ["status", "--porcelain"]), "convert".into()]);
    /// let exec = Exec::new("p", grant, std::env::temp_dir(), Auditor::new("p", None, None));
    /// let allowed: Vec<String> = exec.allowed().iter().map(|r| r.to_string()).collect();
    /// assert_eq!(allowed, ["git status --porcelain", "convert <any arguments>"]);
    /// ```
    pub fn allowed(&self) -> &[ExecRule] {
        &self.inner.allow
    }

    /// The resource limits of every process a command starts.
    pub fn limits(&self) -> ExecLimits {
        self.inner.limits
    }

    /// The working directory of commands.
    pub fn work_dir(&self) -> &Path {
        &self.inner.work_dir
    }

    /// Run an allowed command to its end and capture its output. See the [module](self) for
    /// what is allowed, how it runs and when it is killed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use plugd_core::{Auditor, Exec, ExecGrant, ExecRule};
    /// let grant = ExecGrant::new([ExecRule::pinned("echo", ["*"])]);
    /// let exec = Exec::new("p", grant, std::env::temp_dir(), Auditor::new("p", None, None));
    /// let out = exec.run("echo", &["hi".into()], b"", None).await.unwrap();
    /// assert_eq!((out.status, out.stdout.as_slice()), (0, b"hi\n".as_slice()));
    /// # #[cfg(unix)] {
    /// let e = exec.run("echo", &["-e".into()], b"", None).await.unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "exec denied: plugin 'p' may not run 'echo' with argument 1 '-e' (plugins.plugins[].exec.allow allows: echo *)"
    /// );
    /// # }
    /// let e = exec.run("rm", &["-rf".into(), "/".into()], b"", None).await.unwrap_err();
    /// assert_eq!(e.to_string(), "exec denied: plugin 'p' may not run 'rm' (not in exec.allow)");
    /// # });
    /// ```
    pub async fn run(
        &self,
        command: &str,
        args: &[String],
        stdin: &[u8],
        timeout: Option<Duration>,
    ) -> Result<CommandOutput, HostError> {
        let r = self.spawn_and_wait(command, args, stdin, timeout).await;
        self.inner.auditor.check(r, "exec", "exec.run")
    }

    #[cfg(not(unix))]
    async fn spawn_and_wait(
        &self,
        command: &str,
        args: &[String],
        _stdin: &[u8],
        _timeout: Option<Duration>,
    ) -> Result<CommandOutput, HostError> {
        self.permit(command, args)?;
        Err(HostError::Unsupported(format!(
            "exec of plugin '{}': commands run only on a Unix host (process groups and resource limits)",
            self.inner.plugin
        )))
    }

    #[cfg(unix)]
    async fn spawn_and_wait(
        &self,
        command: &str,
        args: &[String],
        stdin: &[u8],
        timeout: Option<Duration>,
    ) -> Result<CommandOutput, HostError> {
        use std::process::Stdio;
        use tokio::io::AsyncWriteExt;

        self.permit(command, args)?;
        let plugin = &self.inner.plugin;
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let failed = |why: String| {
            HostError::Failed(format!("exec of plugin '{plugin}': '{command}' {why}"))
        };
        let killed_at_timeout = || {
            failed(format!(
                "did not finish within {} and was killed",
                humantime::format_duration(timeout)
            ))
        };
        let mut command_line = tokio::process::Command::new(command);
        command_line
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .current_dir(&self.inner.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let limits = group::Rlimits::new(&self.inner.limits, timeout);
        let mut group = group::Group::spawn(command_line, limits)
            .map_err(|e| failed(format!("could not be started: {e}")))?;
        let (Some(mut input), Some(stdout), Some(stderr)) = group.pipes() else {
            return Err(failed("has no pipes".into()));
        };
        let max = self.max_output;
        let stdin = stdin.to_vec();
        let outcome = tokio::time::timeout(timeout, async {
            let feed = async move {
                // A command that does not read its input closes the pipe: not an error.
                let _ = input.write_all(&stdin).await;
                drop(input);
                Ok(())
            };
            // When the command exits, what it left behind is killed: the pipes those
            // processes held close, and the reads below end.
            let exit = async {
                group.exited().await;
                group.kill();
                Ok(())
            };
            // The first stream over the cap ends the wait at once.
            let (_, out, err, _) = tokio::try_join!(
                feed,
                read_capped(stdout, max, "stdout"),
                read_capped(stderr, max, "stderr"),
                exit
            )?;
            Ok::<_, Overflow>((out, err))
        })
        .await;
        let (stdout, stderr) = match outcome {
            Ok(Ok(output)) => output,
            Ok(Err(Overflow(stream))) => {
                group.kill_and_reap().await;
                return Err(failed(format!(
                    "wrote more than {} to {stream} (the cap) and was killed",
                    crate::audit::bytes_text(max)
                )));
            }
            Err(_) => {
                group.kill_and_reap().await;
                return Err(killed_at_timeout());
            }
        };
        // The command has exited and its group was killed: reaping it does not wait.
        let status = group
            .reap()
            .await
            .map_err(|e| failed(format!("could not be waited for: {e}")))?;
        Ok(CommandOutput {
            status: exit_code(status),
            stdout,
            stderr,
        })
    }

    /// Refuse a call no entry of `exec.allow` allows, before any process starts.
    fn permit(&self, command: &str, args: &[String]) -> Result<(), HostError> {
        let plugin = &self.inner.plugin;
        let rules: Vec<&ExecRule> = self
            .inner
            .allow
            .iter()
            .filter(|r| r.command == command)
            .collect();
        if rules.is_empty() {
            return Err(HostError::Denied(format!(
                "exec denied: plugin '{plugin}' may not run '{command}' (not in exec.allow)"
            )));
        }
        if args.iter().any(|a| a.contains('\0')) {
            return Err(HostError::Invalid(format!(
                "exec of plugin '{plugin}': an argument of '{command}' holds a NUL byte"
            )));
        }
        // The argument at fault is where the entry that went furthest stopped matching.
        let mut fault = 0;
        for rule in &rules {
            match rule.mismatch(args) {
                None => return Ok(()),
                Some(i) => fault = fault.max(i),
            }
        }
        let what = match args.get(fault) {
            Some(arg) => format!("with argument {} '{}'", fault + 1, shown(arg)),
            None => format!("with {} argument(s), too few", args.len()),
        };
        let mut allowed: Vec<String> = rules.iter().take(5).map(|r| r.to_string()).collect();
        if rules.len() > 5 {
            allowed.push(format!("and {} more", rules.len() - 5));
        }
        Err(HostError::Denied(format!(
            "exec denied: plugin '{plugin}' may not run '{command}' {what} (plugins.plugins[].exec.allow allows: {})",
            allowed.join("; ")
        )))
    }
}

/// An argument for a message: escaped, and cut after 64 characters.
fn shown(arg: &str) -> String {
    let mut out: String = arg.chars().take(64).flat_map(char::escape_debug).collect();
    if arg.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// A command's process group and the limits of its processes.
#[cfg(unix)]
mod group {
    use std::io;
    use std::process::ExitStatus;
    use std::time::Duration;

    use plugd_manifest::ExecLimits;
    use rustix::io::Errno;
    use rustix::process::{
        Pid, Resource, Rlimit, Signal, WaitId, WaitIdOptions, getrlimit, kill_process_group,
        setrlimit, waitid,
    };
    use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
    use tokio::signal::unix::{SignalKind, signal};

    const MIB: u64 = 1024 * 1024;

    /// The resource limits of one command, soft = hard, each at most plugd's own hard limit.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Rlimits([(Resource, u64); 6]);

    impl Rlimits {
        pub(super) fn new(limits: &ExecLimits, timeout: Duration) -> Rlimits {
            let cpu_seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
            Rlimits(
                [
                    (Resource::Cpu, cpu_seconds.max(1)),
                    (Resource::As, u64::from(limits.memory_mb) * MIB),
                    (Resource::Fsize, u64::from(limits.file_size_mb) * MIB),
                    (Resource::Nproc, u64::from(limits.processes)),
                    (Resource::Nofile, u64::from(limits.open_files)),
                    (Resource::Core, 0),
                ]
                .map(|(resource, limit)| {
                    // Only a privileged process may raise a hard limit: stay under plugd's.
                    let hard = getrlimit(resource).maximum.unwrap_or(u64::MAX);
                    (resource, limit.min(hard))
                }),
            )
        }

        /// Set the limits on the calling process. Only `setrlimit` system calls: no allocation,
        /// no locks, so it may run between `fork` and `exec`.
        fn apply(&self) -> io::Result<()> {
            for &(resource, limit) in &self.0 {
                let limit = Rlimit {
                    current: Some(limit),
                    maximum: Some(limit),
                };
                setrlimit(resource, limit)?;
            }
            Ok(())
        }
    }

    /// A spawned command, the leader of its own process group. Dropped before the leader was
    /// reaped (a call dropped mid-way), it kills the group; the `Child` then kills and reaps the
    /// leader (`kill_on_drop`).
    pub(super) struct Group {
        child: Child,
        /// The leader's PID, which is the group's ID.
        pid: Pid,
        reaped: bool,
    }

    impl Group {
        /// Spawn `command` as the leader of a new process group, with `limits`.
        pub(super) fn spawn(mut command: Command, limits: Rlimits) -> io::Result<Group> {
            command.process_group(0);
            // SAFETY: the closure runs in the child between `fork` and `exec`, where only
            // async-signal-safe calls are allowed. It makes `setrlimit` system calls on a
            // `Copy` array captured by value, and builds an `io::Error` from an errno on
            // failure (no allocation): nothing that takes a lock or allocates.
            unsafe {
                command.pre_exec(move || limits.apply());
            }
            let child = command.spawn()?;
            let pid = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw)
                .ok_or_else(|| io::Error::other("the started process has no PID"))?;
            Ok(Group {
                child,
                pid,
                reaped: false,
            })
        }

        /// The pipes of the leader (taken once).
        pub(super) fn pipes(
            &mut self,
        ) -> (Option<ChildStdin>, Option<ChildStdout>, Option<ChildStderr>) {
            (
                self.child.stdin.take(),
                self.child.stdout.take(),
                self.child.stderr.take(),
            )
        }

        /// Resolves when the leader has exited, leaving it unreaped (a zombie): until it is
        /// reaped its PID, the group's ID, is not reused, so [`Group::kill`] cannot reach
        /// another process.
        pub(super) async fn exited(&self) {
            // Listening before looking: an exit between the two still wakes the loop.
            let mut sigchld = signal(SignalKind::child()).ok();
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
            loop {
                match waitid(WaitId::Pid(self.pid), options) {
                    Ok(None) => {}
                    Err(Errno::INTR) => continue,
                    // Exited; or not our child any more (ECHILD): nothing left to wait for.
                    Ok(Some(_)) | Err(_) => return,
                }
                let woken = match &mut sigchld {
                    Some(s) => s.recv().await.is_some(),
                    None => false,
                };
                if !woken {
                    // No SIGCHLD stream (no signal driver): look again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }

        /// SIGKILL to every process of the group; a no-op once the leader was reaped (its ID
        /// may belong to someone else by then).
        pub(super) fn kill(&self) {
            if self.reaped {
                return;
            }
            match kill_process_group(self.pid, Signal::KILL) {
                // ESRCH: nothing left in the group.
                Ok(()) | Err(Errno::SRCH) => {}
                Err(e) => {
                    let pgid = self.pid.as_raw_nonzero().get();
                    tracing::warn!(pgid, error = %e, "exec: could not kill a process group");
                }
            }
        }

        /// Wait for the leader to end and reap it. Kill the group first: afterwards it can no
        /// longer be named safely.
        pub(super) async fn reap(&mut self) -> io::Result<ExitStatus> {
            let status = self.child.wait().await;
            self.reaped = true;
            status
        }

        /// Kill the group and reap its leader.
        pub(super) async fn kill_and_reap(&mut self) {
            self.kill();
            let _ = self.reap().await;
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            self.kill();
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return -signal;
        }
    }
    -1
}

/// Read a stream to its end, at most `max` bytes.
async fn read_capped(
    mut stream: impl AsyncRead + Unpin,
    max: usize,
    name: &'static str,
) -> Result<Vec<u8>, Overflow> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(out),
            Ok(n) => {
                if out.len() + n > max {
                    return Err(Overflow(name));
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, PluginState};

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
            Exec::new("p", grant, dir.to_path_buf(), auditor),
            state,
            log,
        )
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn only_exact_allowlisted_commands_run_and_a_denial_is_counted_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let (exec, state, log) = exec(dir.path(), &["cat", "env", "pwd", "false"]);
        for command in ["rm", "/bin/cat", "cat ", "sh", ""] {
            let e = exec.run(command, &[], b"", None).await.unwrap_err();
            assert_eq!(
                e,
                HostError::Denied(format!(
                    "exec denied: plugin 'p' may not run '{command}' (not in exec.allow)"
                ))
            );
        }
        assert_eq!(state.error_count(), 5);
        let audit = log.entries(Some("p"));
        assert_eq!(audit.len(), 5);
        assert_eq!(audit[0].capability, "exec");
        assert_eq!(
            audit[0].detail,
            "exec.run: exec denied: plugin 'p' may not run 'rm' (not in exec.allow)"
        );

        let out = exec.run("cat", &[], b"from stdin", None).await.unwrap();
        assert_eq!(
            out,
            CommandOutput {
                status: 0,
                stdout: b"from stdin".to_vec(),
                stderr: vec![]
            }
        );
        // No shell: metacharacters are plain arguments.
        let out = exec
            .run("cat", &args(&["no-such-file; echo pwned"]), b"", None)
            .await
            .unwrap();
        assert_eq!(out.status, 1);
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-file; echo pwned"));
        let out = exec.run("env", &[], b"", None).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("PATH={PATH}\n")
        );
        let out = exec.run("pwd", &[], b"", None).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            dir.path().canonicalize().unwrap().display().to_string()
        );
        assert_eq!(exec.run("false", &[], b"", None).await.unwrap().status, 1);
        assert_eq!(state.error_count(), 5, "allowed commands are not errors");
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (exec, _, _) = exec(dir.path(), &["sleep"]);
        let e = exec
            .run(
                "sleep",
                &args(&["30"]),
                b"",
                Some(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Failed(
                "exec of plugin 'p': 'sleep' did not finish within 200ms and was killed".into()
            )
        );
        // The handle's limit caps a longer timeout from the call.
        let e = exec
            .with_timeout(Duration::from_millis(200))
            .run(
                "sleep",
                &args(&["30"]),
                b"",
                Some(Duration::from_secs(3600)),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HostError::Failed(m) if m.contains("within 200ms")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn output_past_the_cap_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let (exec, _, _) = exec(dir.path(), &["yes", "head"]);
        let e = exec
            .with_max_output(64 * 1024)
            .run("yes", &[], b"", Some(Duration::from_secs(20)))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            HostError::Failed(
                "exec of plugin 'p': 'yes' wrote more than 64 KiB to stdout (the cap) and was killed"
                    .into()
            )
        );
        let out = exec
            .with_max_output(64 * 1024)
            .run("head", &args(&["-c", "65536", "/dev/zero"]), b"", None)
            .await
            .unwrap();
        assert_eq!(out.stdout.len(), 64 * 1024, "exactly the cap is fine");
    }

    #[tokio::test]
    async fn pinned_arguments_allow_the_exact_argv_and_refuse_others_before_a_process_starts() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"echo "$0" >> ran"#;
        let (exec, state, log) = exec_with(
            dir.path(),
            ExecGrant::new([
                ExecRule::pinned("git", ["status", "--porcelain"]),
                ExecRule::pinned("git", ["log", "--max-count=*", "*"]),
                ExecRule::pinned("sh", ["-c", script, "*"]),
                ExecRule::pinned("echo", ["-n", "*"]).with_extra_args(),
            ]),
        );
        let ran = dir.path().join("ran");
        let out = exec
            .run("sh", &args(&["-c", script, "hello"]), b"", None)
            .await
            .unwrap();
        assert_eq!(out.status, 0, "{out:?}");
        let out = exec
            .run("echo", &args(&["-n", "a", "-e", "b"]), b"", None)
            .await
            .unwrap();
        assert_eq!(
            out.stdout, b"a -e b",
            "extra_args: anything after the prefix"
        );
        // Allowed (git may fail outside a repository, but it is not refused).
        let r = exec
            .run("git", &args(&["status", "--porcelain"]), b"", None)
            .await;
        assert!(!matches!(r, Err(HostError::Denied(_))), "{r:?}");
        assert_eq!(state.error_count(), 0);

        let git = "(plugins.plugins[].exec.allow allows: git status --porcelain; git log --max-count=* *)";
        let sh = r#"(plugins.plugins[].exec.allow allows: sh -c "echo \"$0\" >> ran" *)"#;
        let refused: [(&str, &[&str], String); 8] = [
            // H3: an option where the grant pins a subcommand.
            (
                "git",
                &[
                    "-c",
                    "core.sshCommand=sh -c 'id >&2'",
                    "ls-remote",
                    "ssh://x/y",
                ],
                format!("with argument 1 '-c' {git}"),
            ),
            // An option where a plain word goes (`*` never takes a leading '-').
            (
                "git",
                &["log", "--max-count=1", "--output=/etc/passwd"],
                format!("with argument 3 '--output=/etc/passwd' {git}"),
            ),
            (
                "git",
                &["status", "--porcelain", "--upload-pack=sh"],
                format!("with argument 3 '--upload-pack=sh' {git}"),
            ),
            (
                "git",
                &["status"],
                format!("with 1 argument(s), too few {git}"),
            ),
            (
                "sh",
                &["-c", script, "-x"],
                format!("with argument 3 '-x' {sh}"),
            ),
            (
                "sh",
                &["-c", script, "a", "b"],
                format!("with argument 4 'b' {sh}"),
            ),
            (
                "sh",
                &["-c", "id > ran", "x"],
                format!("with argument 2 'id > ran' {sh}"),
            ),
            (
                "sh",
                &["-c", "echo\n\"$0\"", "x"],
                format!("with argument 2 'echo\\n\\\"$0\\\"' {sh}"),
            ),
        ];
        for (command, argv, why) in &refused {
            let e = exec.run(command, &args(argv), b"", None).await.unwrap_err();
            assert_eq!(
                e,
                HostError::Denied(format!(
                    "exec denied: plugin 'p' may not run '{command}' {why}"
                ))
            );
        }
        assert_eq!(state.error_count(), refused.len() as u64);
        let audit = log.entries(Some("p"));
        assert_eq!(audit.len(), refused.len());
        assert_eq!(audit[0].capability, "exec");
        assert_eq!(
            audit[0].detail,
            format!(
                "exec.run: exec denied: plugin 'p' may not run 'git' with argument 1 '-c' {git}"
            )
        );
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap(),
            "hello\n",
            "no refused call started a process"
        );
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
}
