use std::any::Any;
use std::fmt;

use crate::HostError;

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The host refused: the plugin lacks the permission, or the call is not allowed here.
    Denied,
    /// This plugd build does not provide the host call.
    Unsupported,
    /// The named plugin, service, key or route does not exist.
    NotFound,
    /// The host rejected the arguments.
    Invalid,
    /// The host tried and failed (I/O, timeout, remote error).
    Failed,
    /// Raised by the plugin itself (or converted from another error type).
    Plugin,
}

/// An error: a message for the operator, and where it came from.
///
/// Host errors keep the host's own text (`permission denied: plugin 'x' attempted database access
/// without permission`); anything that implements `std::error::Error` converts with `?`; a plain
/// message is [`Error::msg`] or [`bail!`](crate::bail). What a plugin function returns as `Err` is
/// what the host logs and counts.
///
/// ```ignore
/// fn init(&mut self, config: &Config) -> Result<()> {
///     let limit: u32 = config.get("limit")?.unwrap_or(10);   // serde errors convert with `?`
///     if limit == 0 {
///         return Err(Error::msg("limit must be positive"));
///     }
///     plugd_guest::register::route("GET", "/items")?;        // host errors convert with `?`
///     Ok(())
/// }
/// ```
///
/// `Error` deliberately does not implement `std::error::Error` itself (as `anyhow::Error`), so that
/// the blanket conversion from every error type is possible.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error raised by the plugin, with this message.
    pub fn msg(message: impl fmt::Display) -> Error {
        Error {
            kind: ErrorKind::Plugin,
            message: message.to_string(),
        }
    }

    /// An error of a given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Where the error came from.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, as the host will log it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the host refused the call for lack of permission.
    pub fn is_denied(&self) -> bool {
        self.kind == ErrorKind::Denied
    }

    /// Whether the host reported that the named thing does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// The message with what it is about in front: `self.context("loading users")` gives
    /// `loading users: <message>`.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub(crate) fn into_message(self) -> String {
        self.message
    }
}

impl Error {
    /// The error for a host call's failure, keeping the host's text.
    pub fn from_host(e: &HostError) -> Error {
        let (kind, text, fallback) = match e {
            HostError::Denied(m) => (ErrorKind::Denied, m, "permission denied"),
            HostError::Unsupported(m) => (ErrorKind::Unsupported, m, "unsupported by this host"),
            HostError::NotFound(m) => (ErrorKind::NotFound, m, "not found"),
            HostError::Invalid(m) => (ErrorKind::Invalid, m, "invalid argument"),
            HostError::Failed(m) => (ErrorKind::Failed, m, "host call failed"),
        };
        let message = if text.is_empty() {
            fallback.to_owned()
        } else {
            text.clone()
        };
        Error { kind, message }
    }
}

/// Every `std::error::Error` converts with `?`; a [`HostError`] keeps its kind and the host's text.
impl<E: std::error::Error + 'static> From<E> for Error {
    fn from(e: E) -> Error {
        if let Some(host) = (&e as &dyn Any).downcast_ref::<HostError>() {
            return Error::from_host(host);
        }
        Error::msg(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

/// Adds context to any error on its way into an [`Error`].
///
/// ```ignore
/// use plugd_guest::ResultExt;
/// let rows = db::query("SELECT * FROM users", &[]).context("loading users")?;
/// ```
pub trait ResultExt<T> {
    /// Converts the error and prefixes its message with `context: `.
    fn context(self, context: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
}

impl<T> ResultExt<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::msg(context))
    }
}
