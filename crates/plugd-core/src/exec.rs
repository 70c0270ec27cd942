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
//! Through a [`CommandRunner`], the port a backend implements (`plugd-std`'s `ProcessRunner`
//! on Unix); the host decides everything above and hands the runner a [`CommandSpec`]: the
//! program and arguments as allowed, the environment, the working directory, the input, the
//! timeout, the output cap and the limits. Every runner passes the conformance suite
//! `plugd_core::testing::command_runner` (feature `testing`). The standard runner works as
//! follows.
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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plugd_manifest::{ExecGrant, ExecLimits, ExecRule};

use crate::audit::{Auditor, bytes_text};
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

/// One command the host decided to run, as a [`CommandRunner`] gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandSpec {
    /// The program, as `exec.allow` names it (looked up in `PATH` of `env` when it has no `/`).
    pub program: String,
    /// Its arguments, without a shell.
    pub args: Vec<String>,
    /// The whole environment of the process (nothing of the host's own is inherited).
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub work_dir: PathBuf,
    /// Its standard input.
    pub stdin: Vec<u8>,
    /// When to kill it (and everything it started): [`RunError::TimedOut`].
    pub timeout: Duration,
    /// The most it may write to stdout, and to stderr: past it, [`RunError::Overflow`].
    pub max_output: usize,
    /// The resource limits of every process it starts.
    pub limits: ExecLimits,
}

impl CommandSpec {
    /// `program` with `args`, the host's environment policy (`PATH` only), in `work_dir`, with
    /// the default timeout, output cap and limits.
    pub fn new(program: &str, args: &[String], work_dir: impl Into<PathBuf>) -> CommandSpec {
        CommandSpec {
            program: program.to_string(),
            args: args.to_vec(),
            env: vec![("PATH".to_string(), PATH.to_string())],
            work_dir: work_dir.into(),
            stdin: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_output: MAX_OUTPUT_BYTES,
            limits: ExecLimits::default(),
        }
    }
}

/// Why a [`CommandRunner`] has no output to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// It ran past its timeout and was killed.
    #[error("did not finish within its timeout and was killed")]
    TimedOut,
    /// It wrote more than the cap to this stream (`stdout`, `stderr`) and was killed.
    #[error("wrote more than the cap to {0} and was killed")]
    Overflow(&'static str),
    /// Commands cannot run here at all (why: a platform without process groups, say).
    #[error("{0}")]
    Unsupported(String),
    /// It could not be started or waited for: what happened, said after the command's name
    /// (`could not be started: No such file or directory`).
    #[error("{0}")]
    Failed(String),
}

/// The port of `exec`: run one command to its end and capture its output, within the spec's
/// timeout, output cap and limits. When the returned future is dropped (the caller's deadline,
/// a reload) the command and everything it started must be killed.
#[async_trait]
pub trait CommandRunner: Send + Sync + fmt::Debug + 'static {
    /// Run `command`.
    async fn run(&self, command: CommandSpec) -> Result<CommandOutput, RunError>;
}

/// How much longer than the command's timeout the host waits for a runner before it gives up on
/// it (and drops its future).
const RUNNER_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Inner {
    plugin: Arc<str>,
    allow: Vec<ExecRule>,
    limits: ExecLimits,
    work_dir: PathBuf,
    runner: Arc<dyn CommandRunner>,
    auditor: Auditor,
}

/// One plugin's command runner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exec {
    inner: Arc<Inner>,
    timeout: Duration,
    max_output: usize,
}

impl Exec {
    /// A runner for `plugin` limited to what `grant` allows, running in `work_dir` (which must
    /// exist) through `runner`. The grant is taken as it is: the host config reader and
    /// [`check_entry`] refuse a bad one ([`ExecGrant::check`]).
    ///
    /// [`check_entry`]: crate::check_entry
    pub fn new(
        plugin: &str,
        grant: ExecGrant,
        work_dir: PathBuf,
        runner: Arc<dyn CommandRunner>,
        auditor: Auditor,
    ) -> Exec {
        Exec {
            inner: Arc::new(Inner {
                plugin: Arc::from(plugin),
                allow: grant.allow,
                limits: grant.limits,
                work_dir,
                runner,
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
    /// # #[derive(Debug)] struct Echo;
    /// # #[async_trait::async_trait]
    /// # impl plugd_core::CommandRunner for Echo {
    /// #     async fn run(&self, c: plugd_core::CommandSpec) -> Result<plugd_core::CommandOutput, plugd_core::RunError> {
    /// #         Ok(plugd_core::CommandOutput { status: 0, stdout: format!("{}\n", c.args.join(" ")).into_bytes(), stderr: vec![] })
    /// #     }
    /// # }
    /// use std::sync::Arc;
    /// use plugd_core::{Auditor, Exec, ExecGrant, ExecRule};
    /// let grant = ExecGrant::new([ExecRule::pinned("git", ["status", "--porcelain"]), "convert".into()]);
    /// let exec = Exec::new("p", grant, std::env::temp_dir(), Arc::new(Echo), Auditor::new("p", None, None));
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
    /// # #[derive(Debug)] struct Echo;
    /// # #[async_trait::async_trait]
    /// # impl plugd_core::CommandRunner for Echo {
    /// #     async fn run(&self, c: plugd_core::CommandSpec) -> Result<plugd_core::CommandOutput, plugd_core::RunError> {
    /// #         Ok(plugd_core::CommandOutput { status: 0, stdout: format!("{}\n", c.args.join(" ")).into_bytes(), stderr: vec![] })
    /// #     }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use plugd_core::{Auditor, Exec, ExecGrant, ExecRule};
    /// let grant = ExecGrant::new([ExecRule::pinned("echo", ["*"])]);
    /// let exec = Exec::new("p", grant, std::env::temp_dir(), Arc::new(Echo), Auditor::new("p", None, None));
    /// let out = exec.run("echo", &["hi".into()], b"", None).await.unwrap();
    /// assert_eq!((out.status, out.stdout.as_slice()), (0, b"hi\n".as_slice()));
    /// let e = exec.run("echo", &["-e".into()], b"", None).await.unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "exec denied: plugin 'p' may not run 'echo' with argument 1 '-e' (plugins.plugins[].exec.allow allows: echo *)"
    /// );
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
        let r = self.permit_and_run(command, args, stdin, timeout).await;
        self.inner.auditor.check(r, "exec", "exec.run")
    }

    async fn permit_and_run(
        &self,
        command: &str,
        args: &[String],
        stdin: &[u8],
        timeout: Option<Duration>,
    ) -> Result<CommandOutput, HostError> {
        self.permit(command, args)?;
        let plugin = &self.inner.plugin;
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let max = self.max_output;
        let failed = |why: String| {
            HostError::Failed(format!("exec of plugin '{plugin}': '{command}' {why}"))
        };
        let killed_at_timeout = || {
            failed(format!(
                "did not finish within {} and was killed",
                humantime::format_duration(timeout)
            ))
        };
        let overflow = |stream: &str| {
            failed(format!(
                "wrote more than {} to {stream} (the cap) and was killed",
                bytes_text(max)
            ))
        };
        let spec = CommandSpec {
            stdin: stdin.to_vec(),
            timeout,
            max_output: max,
            limits: self.inner.limits,
            ..CommandSpec::new(command, args, self.inner.work_dir.clone())
        };
        // The runner kills at the timeout; should it not answer, dropping its call kills.
        let run = self.inner.runner.run(spec);
        match tokio::time::timeout(timeout + RUNNER_GRACE, run).await {
            Err(_) | Ok(Err(RunError::TimedOut)) => Err(killed_at_timeout()),
            Ok(Err(RunError::Overflow(stream))) => Err(overflow(stream)),
            Ok(Err(RunError::Unsupported(why))) => Err(HostError::Unsupported(format!(
                "exec of plugin '{plugin}': {why}"
            ))),
            Ok(Err(RunError::Failed(why))) => Err(failed(why)),
            Ok(Ok(out)) if out.stdout.len() > max => Err(overflow("stdout")),
            Ok(Ok(out)) if out.stderr.len() > max => Err(overflow("stderr")),
            Ok(Ok(out)) => Ok(out),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Records what it was asked to run; answers `status` 0 and the arguments.
    #[derive(Debug, Default)]
    struct Recorder {
        ran: Mutex<Vec<CommandSpec>>,
    }

    #[async_trait]
    impl CommandRunner for Recorder {
        async fn run(&self, c: CommandSpec) -> Result<CommandOutput, RunError> {
            let stdout = c.args.join(" ").into_bytes();
            self.ran.lock().push(c);
            Ok(CommandOutput {
                status: 0,
                stdout,
                stderr: Vec::new(),
            })
        }
    }

    #[tokio::test]
    async fn the_runner_gets_the_policy_and_a_refused_call_never_reaches_it() {
        let runner = Arc::new(Recorder::default());
        let dir = std::env::temp_dir();
        let exec = Exec::new(
            "p",
            ExecGrant::new([ExecRule::pinned("git", ["status", "*"])]),
            dir.clone(),
            runner.clone(),
            Auditor::new("p", None, None),
        )
        .with_timeout(Duration::from_secs(3))
        .with_max_output(1000);
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            exec.run("git", &args(&["log"]), b"", None).await,
            Err(HostError::Denied(_))
        ));
        assert!(matches!(
            exec.run("rm", &[], b"", None).await,
            Err(HostError::Denied(_))
        ));
        assert!(matches!(
            exec.run("git", &args(&["status", "a\0b"]), b"", None).await,
            Err(HostError::Invalid(_))
        ));
        assert!(
            runner.ran.lock().is_empty(),
            "nothing refused reached the runner"
        );
        let out = exec
            .run(
                "git",
                &args(&["status", "x"]),
                b"in",
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, b"status x");
        let ran = runner.ran.lock().clone();
        assert_eq!(
            ran,
            [CommandSpec {
                program: "git".into(),
                args: args(&["status", "x"]),
                env: vec![("PATH".into(), PATH.into())],
                work_dir: dir,
                stdin: b"in".to_vec(),
                timeout: Duration::from_secs(3),
                max_output: 1000,
                limits: ExecLimits::default(),
            }]
        );
    }

    /// Never answers.
    #[derive(Debug)]
    struct Hung;

    #[async_trait]
    impl CommandRunner for Hung {
        async fn run(&self, _: CommandSpec) -> Result<CommandOutput, RunError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_runner_that_never_answers_is_given_up_on_after_the_timeout() {
        let exec = Exec::new(
            "p",
            ExecGrant::new([ExecRule::from("sleep")]),
            std::env::temp_dir(),
            Arc::new(Hung),
            Auditor::new("p", None, None),
        );
        let e = exec
            .run("sleep", &[], b"", Some(Duration::from_millis(200)))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "exec of plugin 'p': 'sleep' did not finish within 200ms and was killed"
        );
    }
}

/// The conformance suite every [`CommandRunner`] runs against itself (`cargo test` of its
/// crate), through [`Exec`]: on a Unix host with `sh`, `cat`, `env`, `pwd`, `false`, `echo`,
/// `sleep`, `yes`, `head` in `PATH` (git is tried, and may fail, but is never refused).
#[cfg(feature = "testing")]
pub mod conformance {
    use super::*;
    use crate::{AuditLog, PluginState};

    /// Run every check against `runner`, in fresh folders under `scratch` (which must exist).
    pub async fn command_runner(runner: Arc<dyn CommandRunner>, scratch: &Path) {
        let r = &runner;
        only_exact_allowlisted_commands_run_and_a_denial_is_counted_and_audited(r, scratch).await;
        a_command_past_its_timeout_is_killed(r, scratch).await;
        output_past_the_cap_kills_the_command(r, scratch).await;
        pinned_arguments_allow_the_exact_argv_and_refuse_others_before_a_process_starts(r, scratch)
            .await;
    }

    /// An empty folder `name` under `scratch`.
    fn fresh(scratch: &Path, name: &str) -> PathBuf {
        let dir = scratch.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A plugin's [`Exec`] through `runner`, with its state and audit log.
    fn exec_with(
        runner: &Arc<dyn CommandRunner>,
        dir: &Path,
        grant: ExecGrant,
    ) -> (Exec, Arc<PluginState>, Arc<AuditLog>) {
        let state = Arc::new(PluginState::default());
        let log = Arc::new(AuditLog::default());
        let auditor = Auditor::new("p", Some(state.clone()), Some(log.clone()));
        (
            Exec::new("p", grant, dir.to_path_buf(), runner.clone(), auditor),
            state,
            log,
        )
    }

    fn exec(
        runner: &Arc<dyn CommandRunner>,
        dir: &Path,
        allow: &[&str],
    ) -> (Exec, Arc<PluginState>, Arc<AuditLog>) {
        exec_with(
            runner,
            dir,
            ExecGrant::new(allow.iter().map(|&c| ExecRule::from(c))),
        )
    }

    /// Owned arguments.
    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    async fn only_exact_allowlisted_commands_run_and_a_denial_is_counted_and_audited(
        runner: &Arc<dyn CommandRunner>,
        scratch: &Path,
    ) {
        let dir = fresh(
            scratch,
            "only_exact_allowlisted_commands_run_and_a_denial_is_counted_and_audited",
        );
        let (exec, state, log) = exec(runner, &dir, &["cat", "env", "pwd", "false"]);
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
            dir.canonicalize().unwrap().display().to_string()
        );
        assert_eq!(exec.run("false", &[], b"", None).await.unwrap().status, 1);
        assert_eq!(state.error_count(), 5, "allowed commands are not errors");
    }

    async fn a_command_past_its_timeout_is_killed(runner: &Arc<dyn CommandRunner>, scratch: &Path) {
        let dir = fresh(scratch, "a_command_past_its_timeout_is_killed");
        let (exec, _, _) = exec(runner, &dir, &["sleep"]);
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

    async fn output_past_the_cap_kills_the_command(
        runner: &Arc<dyn CommandRunner>,
        scratch: &Path,
    ) {
        let dir = fresh(scratch, "output_past_the_cap_kills_the_command");
        let (exec, _, _) = exec(runner, &dir, &["yes", "head"]);
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

    async fn pinned_arguments_allow_the_exact_argv_and_refuse_others_before_a_process_starts(
        runner: &Arc<dyn CommandRunner>,
        scratch: &Path,
    ) {
        let dir = fresh(
            scratch,
            "pinned_arguments_allow_the_exact_argv_and_refuse_others_before_a_process_starts",
        );
        let script = r#"echo "$0" >> ran"#;
        let (exec, state, log) = exec_with(
            runner,
            &dir,
            ExecGrant::new([
                ExecRule::pinned("git", ["status", "--porcelain"]),
                ExecRule::pinned("git", ["log", "--max-count=*", "*"]),
                ExecRule::pinned("sh", ["-c", script, "*"]),
                ExecRule::pinned("echo", ["-n", "*"]).with_extra_args(),
            ]),
        );
        let ran = &dir.join("ran");
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
            std::fs::read_to_string(ran).unwrap(),
            "hello\n",
            "no refused call started a process"
        );
    }
}
