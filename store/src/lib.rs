//! Strata's engine: an immutable, content-addressed, encrypted backup store
//! for object storage.
//!
//! A tour, in the order data flows:
//!
//! - [`source`] lists and reads what is backed up (a directory or a
//!   bucket); [`changes`] says which keys changed since the last point;
//! - [`ingest`] compares it with the latest point and stores what changed:
//!   [`chunk`] cuts content into blobs, [`crypto`] names them (keyed blake3)
//!   and encrypts them, [`compress`] shrinks them, [`pack`] bundles them;
//! - [`repo`] commits a point in the one write order the format allows:
//!   packs, [`index`] segment, [`manifest`] run pages, then the point;
//! - [`restore`] and [`verify`] read it back; [`backend`] is where the vault
//!   lives. [`format`], [`sealed`] and [`config`] are the shared codecs.
//!
//! The bytes are specified in `format-spec/SPEC.md`.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use strata_store::backend::{memory::MemoryBackend, DynBackend};
//! use strata_store::ingest::{ingest, IngestOptions};
//! use strata_store::repo::{InitOptions, OpenOptions, Repository};
//! use strata_store::restore::{lookup, read_object};
//! use strata_store::source::local::LocalSource;
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir(dir.path().join("src")).unwrap();
//! std::fs::write(dir.path().join("src/hello.txt"), b"hello, vault").unwrap();
//!
//! let vault: DynBackend = Arc::new(MemoryBackend::new());
//! let open = OpenOptions { cache_dir: Some(dir.path().join("cache")) };
//! let repo = Repository::init(vault, b"password", InitOptions::default(), open).await.unwrap();
//! let source = Arc::new(LocalSource::new(dir.path().join("src")).unwrap());
//! let summary = ingest(&repo, source, &IngestOptions::default(), Default::default()).await.unwrap();
//! assert_eq!(summary.objects, 1);
//!
//! let (point, _) = repo.latest_point().await.unwrap().unwrap();
//! let entry = lookup(&repo, &point, "hello.txt").await.unwrap().unwrap();
//! let mut out = Vec::new();
//! read_object(&repo, entry.object.as_ref().unwrap(), &mut out).await.unwrap();
//! assert_eq!(out, b"hello, vault");
//! # });
//! ```
#![warn(missing_docs)]

pub mod allocator;
pub mod backend;
mod blocking;
pub mod changes;
pub mod chunk;
pub mod compress;
pub mod continuous;
pub mod crypto;
pub mod direct_io;
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
pub mod time;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
pub use id::{BlobId, ObjectId};
pub mod config;
pub mod manifest;
