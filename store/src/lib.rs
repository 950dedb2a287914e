//! Strata's engine: an immutable, content-addressed, encrypted backup store
//! for object storage.
#![warn(missing_docs)]

pub mod backend;
pub mod chunk;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod ingest;
pub mod pack;
pub mod repo;
pub mod restore;
pub mod sealed;
pub mod source;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
pub use id::{BlobId, ObjectId};
pub mod config;
pub mod manifest;
