//! Sans-I/O primitives shared by every codec: the object header (magic,
//! kind, version, flags, salt) and bounded little-endian cursors.
//!
//! Spec: `format-spec/SPEC.md#object-header`.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

mod cursor;

pub use cursor::{Reader, Writer};

use crate::error::DecodeError;

/// First four bytes of every vault object.
pub const MAGIC: [u8; 4] = *b"STRA";
/// The one format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Offsets of the object header fields.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of the kind byte.
pub const KIND_OFFSET: usize = MAGIC_OFFSET + 4;
/// Offset of the version byte.
pub const VERSION_OFFSET: usize = KIND_OFFSET + 1;
/// Offset of the 16-bit flags.
pub const FLAGS_OFFSET: usize = VERSION_OFFSET + 1;
/// Offset of the 32-byte salt.
pub const SALT_OFFSET: usize = FLAGS_OFFSET + 2;
/// Length of the object header.
pub const HEADER_LEN: usize = SALT_OFFSET + 32;

/// Header flag: the sealed body is zstd-compressed.
pub const FLAG_ZSTD: u16 = 1;

/// The type of a vault object, as stored in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// Vault configuration (`config`).
    Config = 1,
    /// A password-wrapped master key (`keys/…`).
    KeyFile = 2,
    /// A pack of encrypted blobs (`packs/…`).
    Pack = 3,
    /// An index segment (`index/…`).
    IndexSegment = 4,
    /// A manifest run page, leaf or inner (`runs/…`).
    RunPage = 5,
    /// A time-index entry, one per point in time (`points/…`).
    Point = 6,
    /// Change-feed positions after a point (`checkpoints/…`).
    Checkpoint = 7,
    /// Progress of an unfinished full pass (`passes/…/<n>`).
    PassState = 8,
    /// A pass for a point began (`passes/…/begun`).
    PassMarker = 9,
}

impl ObjectKind {
    /// Decodes the kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => ObjectKind::Config,
            2 => ObjectKind::KeyFile,
            3 => ObjectKind::Pack,
            4 => ObjectKind::IndexSegment,
            5 => ObjectKind::RunPage,
            6 => ObjectKind::Point,
            7 => ObjectKind::Checkpoint,
            8 => ObjectKind::PassState,
            9 => ObjectKind::PassMarker,
            _ => return None,
        })
    }

    /// Human name, as used in spec, CLI and logs.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::KeyFile => "key file",
            ObjectKind::Pack => "pack",
            ObjectKind::IndexSegment => "index segment",
            ObjectKind::RunPage => "run page",
            ObjectKind::Point => "point",
            ObjectKind::Checkpoint => "checkpoint",
            ObjectKind::PassState => "pass state",
            ObjectKind::PassMarker => "pass marker",
        }
    }
}

/// The 40-byte header at the front of every vault object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the object is.
    pub kind: ObjectKind,
    /// Flag bits ([`FLAG_ZSTD`]).
    pub flags: u16,
    /// Random per-object salt from which the object's subkey is derived.
    pub salt: [u8; 32],
}

impl Header {
    /// The header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut w = Writer::with_capacity(HEADER_LEN);
        w.bytes(&MAGIC);
        w.u8(self.kind as u8);
        w.u8(VERSION);
        w.u16(self.flags);
        w.bytes(&self.salt);
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&w.into_inner());
        out
    }

    /// Decodes and checks the header at the front of `bytes`; `expected`
    /// is the kind the caller asked for.
    pub fn decode(bytes: &[u8], expected: ObjectKind) -> Result<Header, DecodeError> {
        let mut r = Reader::new(bytes);
        let magic = r.array::<4>("magic")?;
        if magic != MAGIC {
            return Err(DecodeError::new(0, "not a strata object (bad magic)"));
        }
        let kind_byte = r.u8("kind")?;
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::unsupported(
                VERSION_OFFSET,
                format!("format version {version} (this build reads version {VERSION})"),
            ));
        }
        let kind = ObjectKind::from_u8(kind_byte).ok_or_else(|| {
            DecodeError::unsupported(KIND_OFFSET, format!("unknown object kind {kind_byte}"))
        })?;
        if kind != expected {
            return Err(DecodeError::new(
                KIND_OFFSET,
                format!("expected a {}, found a {}", expected.name(), kind.name()),
            ));
        }
        let flags = r.u16("flags")?;
        if flags & !FLAG_ZSTD != 0 {
            return Err(DecodeError::unsupported(
                FLAGS_OFFSET,
                format!("unknown header flags {flags:#06x}"),
            ));
        }
        let salt = r.array::<32>("salt")?;
        Ok(Header { kind, flags, salt })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let h = Header {
            kind: ObjectKind::Pack,
            flags: 0,
            salt: [7; 32],
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b, ObjectKind::Pack).unwrap(), h);
        assert!(Header::decode(&b, ObjectKind::Point).is_err());
        let mut v = b;
        v[VERSION_OFFSET] = 2;
        assert!(
            Header::decode(&v, ObjectKind::Pack)
                .unwrap_err()
                .unsupported
        );
        assert!(Header::decode(&b[..10], ObjectKind::Pack).is_err());
    }
}
