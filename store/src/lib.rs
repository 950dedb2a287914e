//! Strata's engine: an immutable, content-addressed, encrypted backup store
//! for object storage.
#![warn(missing_docs)]

pub mod chunk;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod pack;
pub mod sealed;

pub use error::{Error, ErrorKind, Result};
pub use id::{BlobId, ObjectId};
pub mod config;
pub mod manifest;
