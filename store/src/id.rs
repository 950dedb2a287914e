//! Typed 32-byte identifiers, shown and parsed as lowercase hex.
//!
//! [`BlobId`] is keyed blake3 over a blob's plaintext (see `crypto`);
//! [`ObjectId`] is plain blake3 over the bytes of a vault object (pack,
//! index segment, run page), so a reader detects a swapped or damaged object.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = 32;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, for humans.
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(8);
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Config,
                        format!("{} must be 64 hex characters, got {s:?}", stringify!($name)),
                        e,
                    )
                })?;
                Ok($name(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// Content id of a blob: keyed blake3 of its plaintext.
    BlobId
);
id_type!(
    /// Name of an immutable vault object: blake3 of its stored bytes.
    ObjectId
);

impl ObjectId {
    /// The id of `bytes` as stored.
    pub fn of(bytes: &[u8]) -> Self {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ObjectId::of(b"hello");
        let parsed: ObjectId = id.to_hex().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("zz".parse::<ObjectId>().is_err());
    }
}
