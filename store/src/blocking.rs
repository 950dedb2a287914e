//! Sync work (file I/O, decryption, key derivation) on tokio's blocking
//! pool, awaited from async code.

use crate::error::{Error, ErrorKind, Result};

/// Runs `f` on the blocking pool and returns what it returns; a task
/// that panicked or was cancelled is an `Io` error naming `what`.
pub(crate) async fn run<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("{what} task: {e}")))?
}
