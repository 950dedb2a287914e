//! The engine's one error type.
//!
//! Policy: every failure carries an [`ErrorKind`] that callers act on
//! (the scheduler retries `Transient`, verify reports `Corrupt`, a
//! content-addressed `AlreadyExists` means "already stored"), plus the
//! identifiers of what failed (object name, offset, key) rather than prose.
//! Codecs report a [`DecodeError`] with the byte offset; it converts into
//! `Error` with kind `Corrupt` at the module edge, and the caller adds the
//! object name with [`Error::context`].

use std::fmt;

/// What kind of failure an [`Error`] is; drives retries, reports and exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named object or key does not exist.
    NotFound,
    /// A create-only write found the name taken.
    AlreadyExists,
    /// Bytes do not decode: truncated, malformed, or inconsistent.
    Corrupt,
    /// Bytes do not authenticate: damaged, forged, or the wrong key.
    Crypto,
    /// No key file opens with the given password.
    WrongPassword,
    /// The object's format version (or kind) is not one this build reads.
    UnsupportedVersion,
    /// Worth retrying: timeouts, throttling, 5xx.
    Transient,
    /// Local or remote I/O that is not known to be transient.
    Io,
    /// Invalid options, arguments or vault configuration.
    Config,
    /// The operation was interrupted on request.
    Cancelled,
}

impl ErrorKind {
    /// True when the bytes read are damaged (or of a format this build
    /// does not read): what `verify` reports and exit code 3 means.
    pub fn is_damage(self) -> bool {
        matches!(
            self,
            ErrorKind::Corrupt | ErrorKind::Crypto | ErrorKind::UnsupportedVersion
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Crypto => "authentication failed",
            ErrorKind::WrongPassword => "wrong password",
            ErrorKind::UnsupportedVersion => "unsupported version",
            ErrorKind::Transient => "transient",
            ErrorKind::Io => "i/o error",
            ErrorKind::Config => "configuration error",
            ErrorKind::Cancelled => "cancelled",
        };
        f.write_str(s)
    }
}

/// An engine error: a kind, a message, and the context it happened in.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<String>,
    /// How long the server asked the caller to wait (`Retry-After`).
    retry_after: Option<std::time::Duration>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result with the engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a short message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            retry_after: None,
            source: None,
        }
    }

    /// Wraps an underlying error.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let mut e = Error::new(kind, message);
        e.source = Some(Box::new(source));
        e
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Records the wait a server asked for before a retry (`Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The wait the server asked for before a retry, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// Adds where it happened (an object name, a key), outermost last.
    #[must_use]
    pub fn context(mut self, ctx: impl Into<String>) -> Self {
        self.context.push(ctx.into());
        self
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for c in self.context.iter().rev() {
            s.push_str(c);
            s.push_str(": ");
        }
        s.push_str(&self.message);
        if let Some(src) = &self.source {
            s.push_str(": ");
            s.push_str(&src.to_string());
        }
        s
    }

    /// Shorthand for a `Corrupt` error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// Shorthand for a `Config` error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// Shorthand for a `NotFound` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted => ErrorKind::Transient,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, "i/o", e)
    }
}

/// Extension to add context to a `Result` in one call.
pub trait ResultExt<T> {
    /// Adds `ctx` to the error, if any.
    fn ctx(self, ctx: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx(self, ctx: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into().context(ctx()))
    }
}

/// A codec's decode failure: what was wrong and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct DecodeError {
    /// Byte offset in the decoded buffer where the problem was found.
    pub offset: usize,
    /// What was expected or wrong.
    pub what: String,
    /// True when the bytes are well-formed but of a version or kind this
    /// build does not read.
    pub unsupported: bool,
}

impl DecodeError {
    /// A decode error at `offset`.
    pub fn new(offset: usize, what: impl Into<String>) -> Self {
        DecodeError {
            offset,
            what: what.into(),
            unsupported: false,
        }
    }

    /// A version or kind this build does not understand.
    pub fn unsupported(offset: usize, what: impl Into<String>) -> Self {
        DecodeError {
            offset,
            what: what.into(),
            unsupported: true,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        let kind = if e.unsupported {
            ErrorKind::UnsupportedVersion
        } else {
            ErrorKind::Corrupt
        };
        Error::new(kind, e.to_string())
    }
}
