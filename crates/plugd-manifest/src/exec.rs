//! `exec` of a plugin entry: the commands a plugin may run, the arguments it may give them, and
//! the resource limits of every process it starts.
//!
//! Allowing a general program grants whatever that program can do. `git` with free arguments
//! runs any command (`-c core.sshCommand=…`, `--upload-pack=…`) and reads any file
//! (`diff --no-index`); a shell or an interpreter runs anything; ImageMagick writes any path.
//! Each is code execution as the user plugd runs as. Pin the arguments
//! ([`ExecRule::pinned`], `{ command, args }` in the config) to allow only the calls the plugin
//! needs.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// `exec` of a plugin: the commands it may run (with the `exec` permission) and the limits of
/// every process they start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecGrant {
    /// Commands it may run. A program name (`git`) allows it with any arguments, which for most
    /// programs (git, a shell, an interpreter, ImageMagick) is code execution as the plugd user;
    /// `{ command: git, args: [status, --porcelain] }` allows only the arguments the patterns
    /// match. The call is allowed when any entry matches.
    pub allow: Vec<ExecRule>,
    /// Resource limits of every process a command starts (setrlimit).
    pub limits: ExecLimits,
}

impl ExecGrant {
    /// A grant of `rules` with the default limits.
    ///
    /// ```
    /// use plugd_manifest::{ExecGrant, ExecRule};
    ///
    /// let grant = ExecGrant::new([ExecRule::pinned("git", ["status", "--porcelain"])]);
    /// assert!(grant.allows("git", &["status", "--porcelain"]));
    /// assert!(!grant.allows("git", &["-c", "core.sshCommand=sh", "status"]));
    /// assert_eq!(grant.limits.memory_mb, 1024);
    /// ```
    pub fn new(rules: impl IntoIterator<Item = ExecRule>) -> ExecGrant {
        ExecGrant {
            allow: rules.into_iter().collect(),
            limits: ExecLimits::default(),
        }
    }

    /// Whether some entry allows `command` with `args`.
    pub fn allows<S: AsRef<str>>(&self, command: &str, args: &[S]) -> bool {
        self.allow.iter().any(|r| r.matches(command, args))
    }

    /// Check every entry and limit: what the host config reader refuses, for a grant built in
    /// code. The error names the field under `exec` (`allow[1].command`, `limits.memory_mb`).
    ///
    /// ```
    /// use plugd_manifest::{ExecGrant, ExecRule};
    ///
    /// let e = ExecGrant::new([ExecRule::any_args("git status")]).check().unwrap_err();
    /// assert_eq!(e.field, "allow[0]");
    /// assert!(e.reason.starts_with("'git status' holds whitespace"));
    /// ```
    pub fn check(&self) -> Result<(), ExecGrantError> {
        for (i, rule) in self.allow.iter().enumerate() {
            rule.check().map_err(|(field, reason)| {
                let field = match field {
                    RuleField::Command if rule.is_any_args() => format!("allow[{i}]"),
                    RuleField::Command => format!("allow[{i}].command"),
                    RuleField::Arg(j) => format!("allow[{i}].args[{j}]"),
                };
                ExecGrantError { field, reason }
            })?;
        }
        self.limits.check()
    }
}

/// A value of an `exec` grant that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid exec.{field}: {reason}")]
pub struct ExecGrantError {
    /// The dotted path under `exec` (`allow[1].command`, `limits.memory_mb`).
    pub field: String,
    /// What is wrong, and what would fix it.
    pub reason: String,
}

/// An entry of `exec.allow`: a program, and the arguments a call may give it.
///
/// In the config an entry is a program name, which allows any arguments:
///
/// ```yaml
/// exec:
///   allow:
///     - git                                   # git with ANY arguments: code execution
///     - { command: git, args: [status, --porcelain] }
///     - { command: git, args: [log, "--max-count=*", --oneline] }
///     - { command: convert, args: ["*.png", "thumb-*.png"] }
///     - { command: grep, args: [-r, --], extra_args: true }
/// ```
///
/// or an object whose `args` are patterns matched position by position against the call's
/// arguments. A pattern is a literal or a glob: `*` matches any run of characters, `?` one
/// character, within that one argument (there is no escape: `*` and `?` are always wildcards).
/// The call must give exactly as many arguments as there are patterns; with
/// `extra_args: true` the patterns are a prefix and anything may follow, which lets the plugin
/// add options again (`--output=…`, `-c …`): use it only for programs whose every option is
/// harmless. `{ command: date }` allows `date` without arguments.
///
/// A pattern that does not itself start with `-` never matches an argument that does: `*.png`
/// takes `a.png` but not `-write.png`, so a plugin cannot slip an option into a place meant
/// for a file name. An option whose value is free is written with its own pattern
/// (`--max-count=*`).
///
/// Several entries may name the same command; the call is allowed when any of them matches.
/// Pinning arguments does not make every program safe: a program that reads its config from
/// the working directory or from a file the plugin may write, or a pattern that lets the
/// plugin name such a file, can still hand it control.
///
/// ```
/// use plugd_manifest::ExecRule;
///
/// let log = ExecRule::pinned("git", ["log", "--max-count=*", "--oneline"]);
/// assert!(log.matches("git", &["log", "--max-count=5", "--oneline"]));
/// assert!(!log.matches("git", &["log", "--max-count=5"]), "too few");
/// assert!(!log.matches("git", &["log", "--max-count=5", "--oneline", "-p"]), "too many");
/// assert_eq!(log.to_string(), "git log --max-count=* --oneline");
///
/// let thumb = ExecRule::pinned("convert", ["*.png", "thumb-*.png"]);
/// assert!(thumb.matches("convert", &["a.png", "thumb-a.png"]));
/// assert!(!thumb.matches("convert", &["-write.png", "thumb-a.png"]), "an option where a file goes");
///
/// let any = ExecRule::from("git");
/// assert!(any.matches("git", &["-c", "core.sshCommand=sh"]));
/// assert_eq!(any.to_string(), "git <any arguments>");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRule {
    /// The program: a name looked up on plugd's fixed `PATH`, or an absolute path. A call's
    /// command must equal it exactly.
    pub command: String,
    /// Patterns for the arguments, one per position.
    pub args: Vec<String>,
    /// Whether arguments may follow those the patterns match (any arguments when `args` is
    /// empty).
    pub extra_args: bool,
}

/// Which part of a rule is at fault.
enum RuleField {
    Command,
    Arg(usize),
}

impl ExecRule {
    /// `command` with any arguments (a plain string in `exec.allow`).
    pub fn any_args(command: impl Into<String>) -> ExecRule {
        ExecRule {
            command: command.into(),
            args: Vec::new(),
            extra_args: true,
        }
    }

    /// `command` with exactly the arguments `args` match, one pattern per position.
    pub fn pinned(
        command: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> ExecRule {
        ExecRule {
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            extra_args: false,
        }
    }

    /// The same rule with its patterns a prefix: any arguments may follow them. This lets the
    /// plugin add options again.
    pub fn with_extra_args(self) -> ExecRule {
        ExecRule {
            extra_args: true,
            ..self
        }
    }

    /// Whether the rule takes any arguments (the plain-string form).
    pub fn is_any_args(&self) -> bool {
        self.args.is_empty() && self.extra_args
    }

    /// Whether a call of `command` with `args` is allowed by this rule.
    pub fn matches<S: AsRef<str>>(&self, command: &str, args: &[S]) -> bool {
        self.command == command && self.mismatch(args).is_none()
    }

    /// Where `args` stop matching the patterns (the command is not compared): the index of the
    /// first argument at fault, `args.len()` when arguments are missing, or `None` when they
    /// match.
    ///
    /// ```
    /// use plugd_manifest::ExecRule;
    ///
    /// let rule = ExecRule::pinned("git", ["status", "--porcelain"]);
    /// assert_eq!(rule.mismatch(&["status", "--porcelain"]), None);
    /// assert_eq!(rule.mismatch(&["-c", "x"]), Some(0));
    /// assert_eq!(rule.mismatch(&["status", "--porcelain", "-u"]), Some(2), "one too many");
    /// assert_eq!(rule.mismatch(&["status"]), Some(1), "one missing");
    /// ```
    pub fn mismatch<S: AsRef<str>>(&self, args: &[S]) -> Option<usize> {
        for (i, pattern) in self.args.iter().enumerate() {
            match args.get(i) {
                None => return Some(args.len()),
                Some(arg) if !exec_arg_matches(pattern, arg.as_ref()) => return Some(i),
                Some(_) => {}
            }
        }
        (!self.extra_args && args.len() > self.args.len()).then_some(self.args.len())
    }

    fn check(&self) -> Result<(), (RuleField, String)> {
        let command = &self.command;
        let fault = |reason: String| Err((RuleField::Command, reason));
        if command.trim().is_empty() {
            return fault("the command must not be empty".into());
        }
        if command.contains('\0') {
            return fault(format!("{command:?} holds a NUL byte"));
        }
        if command.chars().any(char::is_whitespace) {
            let mut words = command.split_whitespace();
            let program = words.next().unwrap_or_default();
            let args: Vec<&str> = words.collect();
            return fault(format!(
                "'{command}' holds whitespace: a command is one program; pin its arguments with {{ command: {program}, args: [{}] }}",
                args.join(", ")
            ));
        }
        if command.contains('/') && !command.starts_with('/') {
            return fault(format!(
                "'{command}' is a relative path, which would be looked up in the plugin's data directory (the command's working directory): write a program name (looked up on plugd's PATH) or an absolute path"
            ));
        }
        if let Some(j) = self.args.iter().position(|a| a.contains('\0')) {
            return Err((
                RuleField::Arg(j),
                format!("{:?} holds a NUL byte", self.args[j]),
            ));
        }
        Ok(())
    }
}

impl From<&str> for ExecRule {
    /// `command` with any arguments.
    fn from(command: &str) -> ExecRule {
        ExecRule::any_args(command)
    }
}

impl From<String> for ExecRule {
    /// `command` with any arguments.
    fn from(command: String) -> ExecRule {
        ExecRule::any_args(command)
    }
}

/// `git status --porcelain`; `git <any arguments>`; `git log -n * <more arguments>`.
impl fmt::Display for ExecRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command)?;
        if self.is_any_args() {
            return f.write_str(" <any arguments>");
        }
        for pattern in &self.args {
            if pattern.is_empty() || pattern.contains(|c: char| c.is_whitespace() || c == '"') {
                write!(f, " {pattern:?}")?;
            } else {
                write!(f, " {pattern}")?;
            }
        }
        if self.extra_args {
            f.write_str(" <more arguments>")?;
        }
        Ok(())
    }
}

/// Whether `arg` matches `pattern`: `*` matches any run of characters, `?` one character,
/// anything else itself; a pattern that does not start with `-` never matches an argument that
/// does (no option slipped into a place meant for a file name or word).
///
/// ```
/// use plugd_manifest::exec_arg_matches;
///
/// assert!(exec_arg_matches("*.png", "a.png"));
/// assert!(!exec_arg_matches("*.png", "-write.png"));
/// assert!(exec_arg_matches("--max-count=*", "--max-count=5"));
/// assert!(exec_arg_matches("v?", "v1") && !exec_arg_matches("v?", "v10"));
/// ```
pub fn exec_arg_matches(pattern: &str, arg: &str) -> bool {
    if arg.starts_with('-') && !pattern.starts_with('-') {
        return false;
    }
    glob(pattern, arg)
}

/// `*`/`?` wildcard matching, greedy with backtracking to the last `*` (linear in practice,
/// at worst the product of the lengths).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // After a `*`: the pattern position after it, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again.
                Some((after, at)) => {
                    star = Some((after, at + 1));
                    pi = after;
                    ti = at + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// An entry of `exec.allow` with argument patterns.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PinnedExecRule")]
struct PinnedRule {
    /// The program: a name looked up on plugd's PATH, or an absolute path.
    #[schemars(length(min = 1))]
    command: String,
    /// Patterns for the arguments, one per position: a literal, or a glob (`*` any run of
    /// characters, `?` one) within that argument. A pattern not starting with `-` never matches
    /// an argument that does. Default: none (the command without arguments).
    #[serde(default)]
    args: Vec<String>,
    /// Let any arguments follow those the patterns match (default false). This lets the plugin
    /// add options again.
    #[serde(default)]
    extra_args: bool,
}

impl<'de> Deserialize<'de> for ExecRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RuleVisitor;

        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = ExecRule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a program name, or { command, args, extra_args } with argument patterns",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExecRule, E> {
                Ok(ExecRule::any_args(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ExecRule, A::Error> {
                let PinnedRule {
                    command,
                    args,
                    extra_args,
                } = PinnedRule::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ExecRule {
                    command,
                    args,
                    extra_args,
                })
            }
        }

        deserializer.deserialize_any(RuleVisitor)
    }
}

/// A plain string when the rule takes any arguments, else `{ command, args }` (and
/// `extra_args: true` when set): the form it is written in.
impl Serialize for ExecRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_any_args() {
            return serializer.serialize_str(&self.command);
        }
        let mut s = serializer.serialize_struct("ExecRule", 2 + usize::from(self.extra_args))?;
        s.serialize_field("command", &self.command)?;
        s.serialize_field("args", &self.args)?;
        if self.extra_args {
            s.serialize_field("extra_args", &true)?;
        }
        s.end()
    }
}

impl schemars::JsonSchema for ExecRule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExecRule".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A program name (any arguments: for most programs, code execution as the plugd user), or { command, args, extra_args } allowing only the arguments the patterns match.",
            "anyOf": [
                { "type": "string", "minLength": 1 },
                generator.subschema_for::<PinnedRule>()
            ]
        })
    }
}

/// `exec.limits`: resource limits (setrlimit) of every process a command starts, each process
/// on its own. Besides these the host sets `RLIMIT_CPU` to the call's timeout (rounded up to
/// seconds) and `RLIMIT_CORE` to 0. A limit above the host's own hard limit is lowered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecLimits {
    /// Address space of each process, MiB (RLIMIT_AS; default 1024, 16 to 1048576). Programs
    /// that reserve much address space up front (Go, Java) may need more.
    #[schemars(range(min = 16, max = 1_048_576))]
    pub memory_mb: u32,
    /// Largest file a process may write, MiB (RLIMIT_FSIZE; default 64, 0 to 1048576; 0: it may
    /// only write empty files). Past it the write fails and the process gets SIGXFSZ.
    #[schemars(range(max = 1_048_576))]
    pub file_size_mb: u32,
    /// Processes of the user plugd runs as (RLIMIT_NPROC; default 64, 1 to 65536): past it the
    /// command cannot fork or start a thread. Linux counts every process and thread of that
    /// user, plugd's own threads included, not only the command's (raise it on a host with many
    /// cores or when the user runs other programs), and does not apply it to root.
    #[schemars(range(min = 1, max = 65_536))]
    pub processes: u32,
    /// Open file descriptors of each process (RLIMIT_NOFILE; default 256, 16 to 1048576).
    #[schemars(range(min = 16, max = 1_048_576))]
    pub open_files: u32,
}

impl ExecLimits {
    /// Ranges of the fields, inclusive, with the unit for the error.
    const RANGES: [(&'static str, u32, u32, &'static str); 4] = [
        ("memory_mb", 16, 1_048_576, " (MiB)"),
        ("file_size_mb", 0, 1_048_576, " (MiB)"),
        ("processes", 1, 65_536, ""),
        ("open_files", 16, 1_048_576, ""),
    ];

    fn check(&self) -> Result<(), ExecGrantError> {
        let values = [
            self.memory_mb,
            self.file_size_mb,
            self.processes,
            self.open_files,
        ];
        for ((name, min, max, unit), value) in Self::RANGES.into_iter().zip(values) {
            if !(min..=max).contains(&value) {
                return Err(ExecGrantError {
                    field: format!("limits.{name}"),
                    reason: format!("{value} is not between {min} and {max}{unit}"),
                });
            }
        }
        Ok(())
    }
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            memory_mb: 1024,
            file_size_mb: 64,
            processes: 64,
            open_files: 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_one_argument() {
        for (pattern, arg) in [
            ("status", "status"),
            ("*", "anything at all"),
            ("*", ""),
            ("*.png", "a.png"),
            ("*.png", ".png"),
            ("thumb-*.png", "thumb-a-b.png"),
            ("a*b*c", "aXbYbZc"),
            ("v?.?", "v1.2"),
            ("?", "é"),
            ("--max-count=*", "--max-count=10"),
            ("-", "-"),
            ("-*", "-rf"),
        ] {
            assert!(
                exec_arg_matches(pattern, arg),
                "{pattern} should match {arg}"
            );
        }
        for (pattern, arg) in [
            ("status", "statuses"),
            ("status", "Status"),
            ("*.png", "a.png.sh"),
            ("a*b*c", "aXbYbZ"),
            ("v?", "v"),
            ("?", ""),
            ("", "x"),
            // The option rule: only a pattern starting with '-' takes an argument that does.
            ("*", "-c"),
            ("*", "--upload-pack=sh"),
            ("*.png", "-write.png"),
            ("?x", "-x"),
            ("--max-count=*", "--max-count"),
        ] {
            assert!(
                !exec_arg_matches(pattern, arg),
                "{pattern} should not match {arg}"
            );
        }
    }

    #[test]
    fn a_rule_matches_position_by_position_and_counts_the_arguments() {
        let rule = ExecRule::pinned("git", ["log", "*"]);
        assert!(rule.matches("git", &["log", "main"]));
        assert!(
            !rule.matches("/usr/bin/git", &["log", "main"]),
            "exact name"
        );
        assert_eq!(rule.mismatch(&["log", "-p"]), Some(1));
        assert_eq!(rule.mismatch(&["log"]), Some(1));
        assert_eq!(rule.mismatch::<&str>(&[]), Some(0));
        assert_eq!(rule.mismatch(&["log", "main", "extra"]), Some(2));

        let rule = rule.with_extra_args();
        assert_eq!(rule.mismatch(&["log", "main", "-p", "--stat"]), None);
        assert_eq!(
            rule.mismatch(&["log"]),
            Some(1),
            "the prefix is still required"
        );
        assert_eq!(rule.to_string(), "git log * <more arguments>");

        let none = ExecRule::pinned("date", Vec::<String>::new());
        assert!(none.matches::<&str>("date", &[]));
        assert!(!none.matches("date", &["+%s"]));
        assert_eq!(none.to_string(), "date");
        assert_eq!(
            ExecRule::pinned("echo", ["a b", ""]).to_string(),
            r#"echo "a b" """#
        );
    }

    #[test]
    fn entries_read_as_strings_or_objects_and_write_back_the_same() {
        let grant: ExecGrant = serde_json::from_value(serde_json::json!({
            "allow": [
                "git",
                { "command": "git", "args": ["status", "--porcelain"] },
                { "command": "grep", "args": ["-r"], "extra_args": true },
                { "command": "date" }
            ],
            "limits": { "memory_mb": 256 }
        }))
        .unwrap();
        assert_eq!(
            grant.allow,
            [
                ExecRule::any_args("git"),
                ExecRule::pinned("git", ["status", "--porcelain"]),
                ExecRule::pinned("grep", ["-r"]).with_extra_args(),
                ExecRule::pinned("date", Vec::<String>::new()),
            ]
        );
        assert_eq!(
            grant.limits,
            ExecLimits {
                memory_mb: 256,
                ..ExecLimits::default()
            }
        );
        let back = serde_json::to_value(&grant).unwrap();
        assert_eq!(
            back["allow"],
            serde_json::json!([
                "git",
                { "command": "git", "args": ["status", "--porcelain"] },
                { "command": "grep", "args": ["-r"], "extra_args": true },
                { "command": "date", "args": [] }
            ])
        );
        assert_eq!(serde_json::from_value::<ExecGrant>(back).unwrap(), grant);
        let e = serde_json::from_value::<ExecGrant>(serde_json::json!({
            "allow": [{ "command": "git", "arg": ["status"] }]
        }))
        .unwrap_err();
        assert!(e.to_string().starts_with("unknown field `arg`"), "{e}");
        assert!(
            serde_json::from_value::<ExecGrant>(serde_json::json!({ "allow": [{ "args": [] }] }))
                .is_err()
        );
        assert!(serde_json::from_value::<ExecGrant>(serde_json::json!({ "allow": [7] })).is_err());
    }

    #[test]
    fn check_names_the_field_and_the_fix() {
        let check = |rule: ExecRule| ExecGrant::new([rule]).check().unwrap_err();
        let e = check(ExecRule::any_args(""));
        assert_eq!(
            e.to_string(),
            "invalid exec.allow[0]: the command must not be empty"
        );
        assert_eq!(check(ExecRule::any_args(" \t")), e, "blank is empty");
        let e = check(ExecRule::any_args("git status"));
        assert_eq!(
            e.to_string(),
            "invalid exec.allow[0]: 'git status' holds whitespace: a command is one program; pin its arguments with { command: git, args: [status] }"
        );
        let e = check(ExecRule::pinned("bin/tool", ["x"]));
        assert_eq!(e.field, "allow[0].command");
        assert!(e.reason.contains("relative path"), "{e}");
        let e = check(ExecRule::pinned("git\0", ["x"]));
        assert_eq!(e.field, "allow[0].command");
        let e = check(ExecRule::pinned("git", ["ok", "a\0b"]));
        assert_eq!(
            e.to_string(),
            r#"invalid exec.allow[0].args[1]: "a\0b" holds a NUL byte"#
        );
        for fine in [
            ExecRule::any_args("git"),
            ExecRule::any_args("/usr/bin/convert"),
            ExecRule::pinned("git", ["", "*"]),
        ] {
            ExecGrant::new([fine]).check().unwrap();
        }

        let mut grant = ExecGrant::default();
        grant.limits.memory_mb = 8;
        assert_eq!(
            grant.check().unwrap_err().to_string(),
            "invalid exec.limits.memory_mb: 8 is not between 16 and 1048576 (MiB)"
        );
        grant.limits = ExecLimits {
            processes: 0,
            ..ExecLimits::default()
        };
        assert_eq!(
            grant.check().unwrap_err().to_string(),
            "invalid exec.limits.processes: 0 is not between 1 and 65536"
        );
        grant.limits = ExecLimits {
            file_size_mb: 0,
            ..ExecLimits::default()
        };
        grant.check().unwrap();
    }
}
