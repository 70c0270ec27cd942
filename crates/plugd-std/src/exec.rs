//! Process exec: the [`CommandRunner`] of `plugd serve`, on Unix.
//!
//! Each command is the leader of a process group of its own, started without a shell with the
//! spec's environment, working directory and input, and resource limits (`setrlimit` between
//! `fork` and `exec`). The whole group is killed (SIGKILL) at the timeout, when a stream passes
//! the output cap, when the call is dropped, and when the command exits (a child it left behind
//! does not survive the call). The group is killed while its leader is still unreaped, so the
//! group ID cannot have been reused by an unrelated process.

use async_trait::async_trait;
use plugd_core::{CommandOutput, CommandRunner, CommandSpec, RunError};
#[cfg(unix)]
use tokio::io::{AsyncRead, AsyncReadExt};

/// Runs commands as process groups with resource limits (Unix; elsewhere every call is
/// [`RunError::Unsupported`]).
///
/// ```
/// use std::sync::Arc;
/// let host = plugd_core::Host::builder()
///     .commands(Arc::new(plugd_std::ProcessRunner))
/// #   .data_dir(std::env::temp_dir().join(format!("plugd-std-exec-doc-{}", std::process::id())))
///     .build()
///     .unwrap();
/// # drop(host);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessRunner;

#[async_trait]
impl CommandRunner for ProcessRunner {
    #[cfg(not(unix))]
    async fn run(&self, _: CommandSpec) -> Result<CommandOutput, RunError> {
        Err(RunError::Unsupported(
            "commands run only on a Unix host (process groups and resource limits)".into(),
        ))
    }

    #[cfg(unix)]
    async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, RunError> {
        use std::process::Stdio;
        use tokio::io::AsyncWriteExt;

        let timeout = spec.timeout;
        let mut command_line = tokio::process::Command::new(&spec.program);
        command_line
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let limits = group::Rlimits::new(&spec.limits, timeout);
        let mut group = group::Group::spawn(command_line, limits)
            .map_err(|e| RunError::Failed(format!("could not be started: {e}")))?;
        let (Some(mut input), Some(stdout), Some(stderr)) = group.pipes() else {
            return Err(RunError::Failed("has no pipes".into()));
        };
        let max = spec.max_output;
        let stdin = spec.stdin;
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
                return Err(RunError::Overflow(stream));
            }
            Err(_) => {
                group.kill_and_reap().await;
                return Err(RunError::TimedOut);
            }
        };
        // The command has exited and its group was killed: reaping it does not wait.
        let status = group
            .reap()
            .await
            .map_err(|e| RunError::Failed(format!("could not be waited for: {e}")))?;
        Ok(CommandOutput {
            status: exit_code(status),
            stdout,
            stderr,
        })
    }
}

/// Why reading a stream stopped early.
#[cfg(unix)]
struct Overflow(&'static str);

/// A command's process group and the limits of its processes.
#[cfg(unix)]
mod group {
    use std::io;
    use std::process::ExitStatus;
    use std::time::Duration;

    use plugd_core::ExecLimits;
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

#[cfg(unix)]
fn exit_code(status: std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    use std::os::unix::process::ExitStatusExt;
    status.signal().map_or(-1, |signal| -signal)
}

/// Read a stream to its end, at most `max` bytes.
#[cfg(unix)]
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
