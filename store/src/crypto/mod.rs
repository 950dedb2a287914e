//! Keys and authenticated encryption.
//!
//! A vault has one random 256-bit [`MasterKey`]. From it, blake3's
//! `derive_key` gives the blob-id key and the object-encryption root key;
//! every encrypted object gets a fresh random 32-byte salt (stored in its
//! header) and its own AES-256-GCM subkey derived from root key and salt.
//! Within one object, nonces are deterministic ([`Nonce`]: a domain and a
//! counter), which is safe because no subkey is ever used for two objects.
//! Associated data binds each ciphertext to its object header and position.
//!
//! Spec: `format-spec/SPEC.md#crypto`.

pub mod keyfile;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;

use crate::error::{Error, ErrorKind};
use crate::id::BlobId;

/// blake3 `derive_key` context for the blob-id key.
pub const CONTEXT_ID_KEY: &str = "strata v1 2026-11 blob id key";
/// blake3 `derive_key` context for the object-encryption root key.
pub const CONTEXT_DATA_KEY: &str = "strata v1 2026-11 object encryption root key";
/// blake3 `derive_key` context for a per-object subkey (material: root key ‖ salt).
pub const CONTEXT_SUBKEY: &str = "strata v1 2026-11 object subkey";

/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// The vault's random master secret. Never stored unwrapped, never logged.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        MasterKey(random_bytes())
    }
    /// From raw bytes (key file unwrap, test vectors).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }
    /// The raw secret, for wrapping into a key file.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Keys derived from the master key, as used by every codec.
#[derive(Clone)]
pub struct Keys {
    id_key: [u8; 32],
    data_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Derives the working keys.
    pub fn derive(master: &MasterKey) -> Self {
        Keys {
            id_key: blake3::derive_key(CONTEXT_ID_KEY, &master.0),
            data_key: blake3::derive_key(CONTEXT_DATA_KEY, &master.0),
        }
    }

    /// Content id of a blob: keyed blake3 over its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// The cipher for the object whose header carries `salt`.
    pub fn object_cipher(&self, salt: &[u8; 32]) -> ObjectCipher {
        let mut material = [0u8; 64];
        material[..32].copy_from_slice(&self.data_key);
        material[32..].copy_from_slice(salt);
        let subkey = blake3::derive_key(CONTEXT_SUBKEY, &material);
        ObjectCipher(Aes256Gcm::new(&subkey.into()))
    }
}

/// Where a nonce is used inside one object; the 12-byte nonce is the domain
/// (u32 LE) followed by a counter (u64 LE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nonce {
    /// The body of a sealed object.
    Body,
    /// The blob stored at this byte offset of a pack.
    Blob(u64),
    /// A pack's trailer.
    Trailer,
    /// The wrapped master key in a key file.
    KeyWrap,
}

impl Nonce {
    /// The 12 nonce bytes.
    pub fn bytes(self) -> [u8; 12] {
        let (domain, counter): (u32, u64) = match self {
            Nonce::Body => (0, 0),
            Nonce::Blob(offset) => (1, offset),
            Nonce::Trailer => (2, 0),
            Nonce::KeyWrap => (3, 0),
        };
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&domain.to_le_bytes());
        out[4..].copy_from_slice(&counter.to_le_bytes());
        out
    }
}

/// AES-256-GCM under one object's subkey.
pub struct ObjectCipher(Aes256Gcm);

impl ObjectCipher {
    /// From a raw 256-bit key (key files use the argon2 output directly).
    pub fn from_key(key: &[u8; 32]) -> Self {
        ObjectCipher(Aes256Gcm::new(key.into()))
    }

    /// Encrypts and authenticates; output is ciphertext ‖ 16-byte tag.
    pub fn seal(&self, nonce: Nonce, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, &mut out, 0);
        out
    }

    /// Encrypts `buf[start..]` where it lies and appends the tag: the bytes
    /// of [`ObjectCipher::seal`], without a buffer per message.
    pub fn seal_in_place(&self, nonce: Nonce, aad: &[u8], buf: &mut Vec<u8>, start: usize) {
        let tag = self
            .0
            .encrypt_inout_detached(&nonce.bytes().into(), aad, (&mut buf[start..]).into())
            .expect("AES-GCM encryption fails only for inputs over 64 GiB");
        buf.extend_from_slice(&tag);
    }

    /// Authenticates and decrypts ciphertext ‖ tag.
    pub fn open(&self, nonce: Nonce, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let mut buf = sealed.to_vec();
        let body_len = self.open_in_slice(nonce, aad, &mut buf)?.len();
        buf.truncate(body_len);
        Ok(buf)
    }

    /// [`ObjectCipher::open`] where `sealed` lies (a record within a larger
    /// read): returns the plaintext, the front of `sealed`.
    pub fn open_in_slice<'a>(
        &self,
        nonce: Nonce,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], Error> {
        let Some(body_len) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "ciphertext of {} bytes is shorter than its tag",
                    sealed.len()
                ),
            ));
        };
        let (body, tag) = sealed.split_at_mut(body_len);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().unwrap_or([0; TAG_LEN]);
        self.0
            .decrypt_inout_detached(&nonce.bytes().into(), aad, body.into(), &tag.into())
            .map_err(|_| {
                Error::new(
                    ErrorKind::Crypto,
                    "does not authenticate (damaged, forged, moved, or encrypted with another key)",
                )
            })?;
        Ok(body)
    }
}

/// Random bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_differ_per_salt_and_bind_aad() {
        let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
        let a = keys.object_cipher(&[0; 32]);
        let b = keys.object_cipher(&[1; 32]);
        let ct = a.seal(Nonce::Body, b"aad", b"secret");
        assert_eq!(a.open(Nonce::Body, b"aad", &ct).unwrap(), b"secret");
        assert_eq!(
            b.open(Nonce::Body, b"aad", &ct).unwrap_err().kind(),
            ErrorKind::Crypto
        );
        assert!(a.open(Nonce::Body, b"aaX", &ct).is_err());
        assert!(a.open(Nonce::Blob(0), b"aad", &ct).is_err());
        assert!(a.open(Nonce::Body, b"aad", &ct[..3]).is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let k1 = Keys::derive(&MasterKey::from_bytes([1; 32]));
        let k2 = Keys::derive(&MasterKey::from_bytes([2; 32]));
        assert_ne!(k1.blob_id(b"x"), k2.blob_id(b"x"));
        assert_ne!(k1.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }
}
