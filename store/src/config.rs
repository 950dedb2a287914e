//! The vault config (`config`): a sealed object written once by `init`.
//!
//! Spec: `format-spec/SPEC.md#config`. Body (fixed width, 64 bytes):
//!
//! ```text
//! vault_id [16] ‖ created_unix_s i64 ‖ chunk threshold u32 ‖ cdc min u32
//! ‖ cdc avg u32 ‖ cdc max u32 ‖ pack target size u32 ‖ zstd level i32 (as u32)
//! ‖ lock mode u8 ‖ reserved [3] ‖ retention days u32 ‖ reserved [8]
//! ```
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::chunk::ChunkerParams;
use crate::error::{DecodeError, Error, Result};
use crate::format::{Reader, Writer};

/// Object Lock retention applied to every object written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// No Object Lock (local vaults, or S3 with `--no-object-lock`).
    None = 0,
    /// GOVERNANCE: privileged users may bypass.
    Governance = 1,
    /// COMPLIANCE: nobody can shorten or delete before retain-until.
    Compliance = 2,
}

/// The vault's fixed parameters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    /// Random vault identity; key files carry it too.
    #[serde(serialize_with = "hex16")]
    pub vault_id: [u8; 16],
    /// Creation time, unix seconds.
    pub created_unix_s: i64,
    /// How objects are cut into blobs.
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_target_size: u32,
    /// zstd level for blobs and metadata (0: no compression).
    pub zstd_level: i32,
    /// Object Lock mode.
    pub lock_mode: LockMode,
    /// Object Lock retention period in days.
    pub retention_days: u32,
}

fn hex16<S: serde::Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

/// Encoded body length.
pub const CONFIG_LEN: usize = 64;

impl Config {
    /// Defaults for a new vault with the given identity.
    pub fn new(vault_id: [u8; 16], created_unix_s: i64) -> Self {
        Config {
            vault_id,
            created_unix_s,
            chunker: ChunkerParams::default(),
            pack_target_size: 16 << 20,
            zstd_level: 3,
            lock_mode: LockMode::None,
            retention_days: 0,
        }
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        if !(64 << 10..=1 << 30).contains(&self.pack_target_size) {
            return Err(Error::config(format!(
                "pack target size {} must be between 64 KiB and 1 GiB",
                self.pack_target_size
            )));
        }
        if !(0..=19).contains(&self.zstd_level) {
            return Err(Error::config(format!(
                "zstd level {} must be 0..=19",
                self.zstd_level
            )));
        }
        Ok(())
    }

    /// The plaintext body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(CONFIG_LEN);
        w.bytes(&self.vault_id);
        w.i64(self.created_unix_s);
        let c = &self.chunker;
        for v in [
            c.threshold,
            c.min_size,
            c.avg_size,
            c.max_size,
            self.pack_target_size,
        ] {
            w.u32(v);
        }
        w.u32(u32::from_le_bytes(self.zstd_level.to_le_bytes()));
        w.u8(self.lock_mode as u8);
        w.bytes(&[0; 3]);
        w.u32(self.retention_days);
        w.bytes(&[0; 8]);
        w.into_inner()
    }

    /// Decodes a body.
    pub fn decode(body: &[u8]) -> Result<Config, DecodeError> {
        let mut r = Reader::new(body);
        let vault_id = r.array::<16>("vault id")?;
        let created_unix_s = r.i64("created")?;
        let chunker = ChunkerParams {
            threshold: r.u32("chunk threshold")?,
            min_size: r.u32("cdc min")?,
            avg_size: r.u32("cdc avg")?,
            max_size: r.u32("cdc max")?,
        };
        let pack_target_size = r.u32("pack target size")?;
        let zstd_level = i32::from_le_bytes(r.u32("zstd level")?.to_le_bytes());
        let at = r.offset();
        let lock_mode = match r.u8("lock mode")? {
            0 => LockMode::None,
            1 => LockMode::Governance,
            2 => LockMode::Compliance,
            m => {
                return Err(DecodeError::unsupported(
                    at,
                    format!("unknown lock mode {m}"),
                ))
            }
        };
        r.array::<3>("reserved")?;
        let retention_days = r.u32("retention days")?;
        r.array::<8>("reserved")?;
        r.finish("config")?;
        Ok(Config {
            vault_id,
            created_unix_s,
            chunker,
            pack_target_size,
            zstd_level,
            lock_mode,
            retention_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn config_round_trip(id: [u8; 16], created: i64, sizes: [u32; 5], level in -5i32..22, mode in 0u8..3, days: u32) {
            let c = Config {
                vault_id: id,
                created_unix_s: created,
                chunker: ChunkerParams { threshold: sizes[0], min_size: sizes[1], avg_size: sizes[2], max_size: sizes[3] },
                pack_target_size: sizes[4],
                zstd_level: level,
                lock_mode: [LockMode::None, LockMode::Governance, LockMode::Compliance][usize::from(mode)],
                retention_days: days,
            };
            let b = c.encode();
            prop_assert_eq!(b.len(), CONFIG_LEN);
            prop_assert_eq!(Config::decode(&b).unwrap(), c);
        }
    }

    #[test]
    fn round_trip() {
        let c = Config::new([4; 16], 1_700_000_000);
        c.validate().unwrap();
        let b = c.encode();
        assert_eq!(b.len(), CONFIG_LEN);
        assert_eq!(Config::decode(&b).unwrap(), c);
        assert!(Config::decode(&b[..63]).is_err());
    }
}
