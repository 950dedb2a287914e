//! Key files: the master key wrapped under a password with argon2id.
//!
//! Spec: `format-spec/SPEC.md#key-file`. Layout: object header (kind
//! `KeyFile`, salt = argon2 salt), argon2 parameters, vault id, creation
//! time, then AES-256-GCM(KEK, nonce `KeyWrap`, AAD = all preceding bytes)
//! of the 32-byte master key.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use argon2::{Algorithm, Argon2, Params, Version};
use rayon::iter::{IntoParallelIterator, ParallelExtend, ParallelIterator};

use super::{MasterKey, Nonce, ObjectCipher, TAG_LEN};
use crate::error::{DecodeError, Error, ErrorKind};
use crate::format::{Header, ObjectKind, Reader, Writer, HEADER_LEN};

/// Offset of the argon2 memory cost (KiB).
pub const M_COST_OFFSET: usize = HEADER_LEN;
/// Offset of the argon2 time cost.
pub const T_COST_OFFSET: usize = M_COST_OFFSET + 4;
/// Offset of the argon2 parallelism.
pub const P_COST_OFFSET: usize = T_COST_OFFSET + 4;
/// Offset of the 16-byte vault id.
pub const VAULT_ID_OFFSET: usize = P_COST_OFFSET + 4;
/// Offset of the creation time (unix seconds, i64).
pub const CREATED_OFFSET: usize = VAULT_ID_OFFSET + 16;
/// Offset of the wrapped master key.
pub const WRAPPED_OFFSET: usize = CREATED_OFFSET + 8;
/// Total length of a key file.
pub const KEY_FILE_LEN: usize = WRAPPED_OFFSET + 32 + TAG_LEN;

/// Smallest memory cost accepted when writing a key file (64 MiB).
pub const MIN_M_COST_KIB: u32 = 64 * 1024;
/// Largest memory cost accepted when reading one (4 GiB): a hostile key
/// file cannot make us allocate more.
pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 4 lanes: RFC 9106's choice for when much less
    /// than 2 GiB may be spent. The lanes are computed on all cores at
    /// once, so on two cores an open derives its key in half the time of
    /// one lane; a guesser's cost (memory × passes) is the same.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: MIN_M_COST_KIB,
            t_cost: 3,
            p_cost: 4,
        }
    }
}

impl KdfParams {
    fn kek(&self, password: &[u8], salt: &[u8; 32]) -> Result<[u8; 32], Error> {
        if self.m_cost_kib > MAX_M_COST_KIB || self.t_cost > 64 || self.p_cost > 64 {
            return Err(Error::corrupt(format!(
                "key file asks for argon2 costs beyond the accepted maximum: {self:?}"
            )));
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::corrupt(format!("invalid argon2 parameters {self:?}: {e}")))?;
        let mut out = [0u8; 32];
        let blocks = params.block_count();
        // Huge pages, faulted in and zeroed by every core before the
        // passes start. After a few seconds idle a VM's host may have
        // taken free memory back, so first touches are slow: opening a
        // vault after 3 s idle took 217-221 ms (means of 10) with one
        // thread touching it all, 142-145 ms on all cores, 140-161 ms with
        // the crate's own allocation (4 KiB pages faulted by the passes);
        // with the memory just freed, 110, 66 and 112 ms.
        let mut memory = Vec::with_capacity(blocks);
        crate::allocator::advise_huge_pages(&mut memory);
        memory.par_extend(
            (0..blocks)
                .into_par_iter()
                .map(|_| argon2::Block::default()),
        );
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into_with_memory(password, salt, &mut out, &mut memory)
            .map_err(|e| Error::corrupt(format!("argon2 failed: {e}")))?;
        Ok(out)
    }
}

/// A decoded (still wrapped) key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// argon2 salt.
    pub salt: [u8; 32],
    /// argon2 costs.
    pub params: KdfParams,
    /// The vault this key belongs to.
    pub vault_id: [u8; 16],
    /// Creation time, unix seconds.
    pub created_unix_s: i64,
    wrapped: [u8; 32 + TAG_LEN],
}

impl KeyFile {
    /// Wraps `master` under `password`. `salt` is random in normal use
    /// (fixed only for test vectors).
    pub fn wrap(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        salt: [u8; 32],
        vault_id: [u8; 16],
        created_unix_s: i64,
    ) -> Result<KeyFile, Error> {
        if params.m_cost_kib < MIN_M_COST_KIB {
            return Err(Error::config(format!(
                "argon2 memory cost must be at least {MIN_M_COST_KIB} KiB"
            )));
        }
        Self::wrap_unchecked(master, password, params, salt, vault_id, created_unix_s)
    }

    /// [`KeyFile::wrap`] with any cost, for tests that unwrap thousands of
    /// damaged key files (readers accept costs below the writers' minimum).
    #[cfg(any(test, feature = "testing"))]
    pub fn wrap_cheap(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        salt: [u8; 32],
    ) -> Result<KeyFile, Error> {
        Self::wrap_unchecked(master, password, params, salt, [5; 16], 0)
    }

    fn wrap_unchecked(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        salt: [u8; 32],
        vault_id: [u8; 16],
        created_unix_s: i64,
    ) -> Result<KeyFile, Error> {
        let mut kf = KeyFile {
            salt,
            params,
            vault_id,
            created_unix_s,
            wrapped: [0; 32 + TAG_LEN],
        };
        let kek = params.kek(password, &salt)?;
        let sealed = ObjectCipher::from_key(&kek).seal(Nonce::KeyWrap, &kf.aad(), master.expose());
        kf.wrapped.copy_from_slice(&sealed);
        Ok(kf)
    }

    /// Unwraps the master key; `WrongPassword` when the password does not
    /// open this key file.
    pub fn unwrap_key(&self, password: &[u8]) -> Result<MasterKey, Error> {
        let kek = self.params.kek(password, &self.salt)?;
        let plain = ObjectCipher::from_key(&kek)
            .open(Nonce::KeyWrap, &self.aad(), &self.wrapped)
            .map_err(|_| {
                Error::new(
                    ErrorKind::WrongPassword,
                    "the password does not open this key file",
                )
            })?;
        let mut b = [0u8; 32];
        if plain.len() != 32 {
            return Err(Error::corrupt("wrapped master key has the wrong length"));
        }
        b.copy_from_slice(&plain);
        Ok(MasterKey::from_bytes(b))
    }

    fn aad(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(WRAPPED_OFFSET);
        w.bytes(
            &Header {
                kind: ObjectKind::KeyFile,
                flags: 0,
                salt: self.salt,
            }
            .encode(),
        );
        w.u32(self.params.m_cost_kib);
        w.u32(self.params.t_cost);
        w.u32(self.params.p_cost);
        w.bytes(&self.vault_id);
        w.i64(self.created_unix_s);
        w.into_inner()
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.aad();
        b.extend_from_slice(&self.wrapped);
        b
    }

    /// Decodes the stored bytes (does not need the password).
    pub fn decode(bytes: &[u8]) -> Result<KeyFile, DecodeError> {
        let header = Header::decode(bytes, ObjectKind::KeyFile)?;
        // The key's AEAD binds a header without flags: stored flags would
        // be unauthenticated bits (found by fuzzing).
        if header.flags != 0 {
            return Err(DecodeError::new(6, "key files carry no header flags"));
        }
        let mut r = Reader::new(bytes);
        r.take(HEADER_LEN, "header")?;
        let params = KdfParams {
            m_cost_kib: r.u32("argon2 m_cost")?,
            t_cost: r.u32("argon2 t_cost")?,
            p_cost: r.u32("argon2 p_cost")?,
        };
        let vault_id = r.array::<16>("vault id")?;
        let created_unix_s = r.i64("created")?;
        let wrapped = r.array::<{ 32 + TAG_LEN }>("wrapped key")?;
        r.finish("key file")?;
        Ok(KeyFile {
            salt: header.salt,
            params,
            vault_id,
            created_unix_s,
            wrapped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let master = MasterKey::from_bytes([9; 32]);
        let kf = KeyFile::wrap(&master, b"pw", KdfParams::default(), [1; 32], [2; 16], 0).unwrap();
        let bytes = kf.encode();
        assert_eq!(bytes.len(), KEY_FILE_LEN);
        let back = KeyFile::decode(&bytes).unwrap();
        assert_eq!(back.unwrap_key(b"pw").unwrap().expose(), master.expose());
        assert_eq!(
            back.unwrap_key(b"nope").unwrap_err().kind(),
            ErrorKind::WrongPassword
        );
        let mut flipped = bytes.clone();
        flipped[VAULT_ID_OFFSET] ^= 1;
        assert!(KeyFile::decode(&flipped)
            .unwrap()
            .unwrap_key(b"pw")
            .is_err());
        assert!(KeyFile::decode(&bytes[..KEY_FILE_LEN - 1]).is_err());
        // The default's four lanes are part of the derivation: one lane
        // derives another key, and the stored count is authenticated.
        assert_eq!(back.params.p_cost, 4);
        let one_lane = KdfParams {
            p_cost: 1,
            ..KdfParams::default()
        };
        assert_ne!(
            one_lane.kek(b"pw", &[1; 32]).unwrap(),
            KdfParams::default().kek(b"pw", &[1; 32]).unwrap()
        );
        let mut lanes_changed = bytes.clone();
        lanes_changed[P_COST_OFFSET] = 1;
        assert!(KeyFile::decode(&lanes_changed)
            .unwrap()
            .unwrap_key(b"pw")
            .is_err());
        // Regression (fuzz target config_and_key_file): a flags bit was
        // accepted and re-encoded away, an unauthenticated bit.
        let mut flagged = bytes.clone();
        flagged[6] = 1;
        assert!(KeyFile::decode(&flagged).is_err());
    }
}
