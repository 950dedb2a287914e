//! A deliberately plain decoder written from SPEC.md alone, sharing no
//! code with the engine, used to cross-check the engine against the spec.
//! It panics on malformed input: it reads only the checked-in vectors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn nonce(domain: u32, counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&domain.to_le_bytes());
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

fn decrypt(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    Aes256Gcm::new(key.into())
        .decrypt(&nonce.into(), Payload { msg: ct, aad })
        .ok()
}

/// Keys derived from a master key, per SPEC.md#crypto.
pub struct RefKeys {
    /// Blob-id key.
    pub id_key: [u8; 32],
    /// Object root key.
    pub root: [u8; 32],
}

impl RefKeys {
    /// Derives from the master key.
    pub fn new(master: &[u8; 32]) -> Self {
        RefKeys {
            id_key: blake3::derive_key("strata v1 2026-11 blob id key", master),
            root: blake3::derive_key("strata v1 2026-11 object encryption root key", master),
        }
    }
    fn subkey(&self, salt: &[u8]) -> [u8; 32] {
        let mut m = self.root.to_vec();
        m.extend_from_slice(salt);
        blake3::derive_key("strata v1 2026-11 object subkey", &m)
    }
    /// A blob id.
    pub fn blob_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }
}

/// Checks the 40-byte header and returns (kind, flags, salt).
pub fn header(b: &[u8]) -> (u8, u16, [u8; 32]) {
    assert_eq!(&b[0..4], b"STRA", "magic");
    assert_eq!(b[5], 1, "version");
    (b[4], u16_at(b, 6), b[8..40].try_into().unwrap())
}

/// Opens a sealed object of `kind` and returns its body.
pub fn open_sealed(keys: &RefKeys, b: &[u8], kind: u8) -> Option<Vec<u8>> {
    let (k, flags, salt) = header(b);
    assert_eq!(k, kind, "kind");
    let plain = decrypt(&keys.subkey(&salt), nonce(0, 0), &b[..40], &b[40..])?;
    let raw_len = u64_at(&plain, 0) as usize;
    let payload = &plain[8..];
    let body = if flags & 1 != 0 {
        zstd::bulk::decompress(payload, raw_len).ok()?
    } else {
        payload.to_vec()
    };
    (body.len() == raw_len).then_some(body)
}

/// Unwraps the master key of a key file with a password.
pub fn unwrap_key_file(b: &[u8], password: &[u8]) -> Option<[u8; 32]> {
    let (kind, _, salt) = header(b);
    assert_eq!(kind, 2);
    assert_eq!(b.len(), 124);
    let params = argon2::Params::new(u32_at(b, 40), u32_at(b, 44), u32_at(b, 48), Some(32)).ok()?;
    let mut kek = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(password, &salt, &mut kek)
        .ok()?;
    decrypt(&kek, nonce(3, 0), &b[..76], &b[76..]).map(|m| m.try_into().unwrap())
}

/// One blob of a pack: (id, offset, stored_len, raw_len, compression, plaintext).
pub type RefBlob = ([u8; 32], u64, u32, u32, u8, Vec<u8>);

/// Reads every blob of a pack, checking ids.
pub fn read_pack(keys: &RefKeys, b: &[u8]) -> Option<Vec<RefBlob>> {
    let (kind, _, salt) = header(b);
    assert_eq!(kind, 3);
    assert_eq!(&b[b.len() - 4..], b"STRP");
    let tlen = u32_at(b, b.len() - 8) as usize;
    let tstart = b.len() - 8 - tlen;
    let key = keys.subkey(&salt);
    let trailer = decrypt(&key, nonce(2, 0), &b[..40], &b[tstart..b.len() - 8])?;
    let count = u32_at(&trailer, 0) as usize;
    let mut out = Vec::new();
    for i in 0..count {
        let e = &trailer[4 + i * 52..4 + (i + 1) * 52];
        let id: [u8; 32] = e[..32].try_into().unwrap();
        let (offset, stored, raw, comp) = (u64_at(e, 32), u32_at(e, 40), u32_at(e, 44), e[48]);
        let mut aad = b[..40].to_vec();
        aad.extend_from_slice(&offset.to_le_bytes());
        aad.extend_from_slice(&id);
        aad.push(comp);
        aad.extend_from_slice(&raw.to_le_bytes());
        let rec = &b[offset as usize..offset as usize + stored as usize];
        let payload = decrypt(&key, nonce(1, offset), &aad, rec)?;
        let plain = if comp == 1 {
            zstd::bulk::decompress(&payload, raw as usize).ok()?
        } else {
            payload
        };
        if keys.blob_id(&plain) != id {
            return None;
        }
        out.push((id, offset, stored, raw, comp, plain));
    }
    Some(out)
}

/// Reads a str16 at `at`; returns it and the next offset.
pub fn str16(b: &[u8], at: usize) -> (String, usize) {
    let n = u16_at(b, at) as usize;
    (
        String::from_utf8(b[at + 2..at + 2 + n].to_vec()).unwrap(),
        at + 2 + n,
    )
}

/// Decodes a point body: (seq, time_ns, prev, run roots, source).
pub fn point(body: &[u8]) -> (u64, i64, [u8; 32], Vec<[u8; 32]>, String) {
    let seq = u64_at(body, 0);
    let time = u64_at(body, 8) as i64;
    let prev: [u8; 32] = body[24..56].try_into().unwrap();
    let mut at = 56 + 6 * 8;
    let nruns = u32_at(body, at) as usize;
    at += 4;
    let roots = (0..nruns)
        .map(|i| body[at + i * 65..at + i * 65 + 32].try_into().unwrap())
        .collect();
    at += nruns * 65;
    let nseg = u32_at(body, at) as usize;
    at += 4 + nseg * 32;
    let (source, _) = str16(body, at);
    (seq, time, prev, roots, source)
}

/// Decodes a checkpoint body: (seq, [(feed, position)]).
pub fn checkpoint(body: &[u8]) -> (u64, Vec<(String, String)>) {
    let seq = u64_at(body, 0);
    let n = u32_at(body, 8) as usize;
    let mut at = 12;
    let mut feeds = Vec::new();
    for _ in 0..n {
        let (feed, next) = str16(body, at);
        let (position, next) = str16(body, next);
        at = next;
        feeds.push((feed, position));
    }
    assert_eq!(at, body.len());
    (seq, feeds)
}

/// Decodes a pass marker body: (seq, began).
pub fn pass_marker(body: &[u8]) -> (u64, i64) {
    assert_eq!(body.len(), 16);
    (u64_at(body, 0), u64_at(body, 8) as i64)
}

/// Decodes a pass state body: (seq, prev, source, [(after, until, done,
/// cursor, run roots)]).
#[allow(clippy::type_complexity)]
pub fn pass_state(
    body: &[u8],
) -> (
    u64,
    [u8; 32],
    String,
    Vec<(String, Option<String>, bool, Option<String>, Vec<[u8; 32]>)>,
) {
    let seq = u64_at(body, 0);
    let prev: [u8; 32] = body[8..40].try_into().unwrap();
    let (source, mut at) = str16(body, 48);
    let n = u32_at(body, at) as usize;
    at += 4;
    let mut parts = Vec::new();
    let opt = |at: &mut usize| -> Option<String> {
        let flag = body[*at];
        *at += 1;
        (flag == 1).then(|| {
            let (s, next) = str16(body, *at);
            *at = next;
            s
        })
    };
    for _ in 0..n {
        let (after, next) = str16(body, at);
        at = next;
        let until = opt(&mut at);
        let done = body[at] == 1;
        at += 1;
        let cursor = opt(&mut at);
        at += 48;
        let runs = u32_at(body, at) as usize;
        at += 4;
        let roots = (0..runs)
            .map(|i| body[at + i * 65..at + i * 65 + 32].try_into().unwrap())
            .collect();
        at += runs * 65;
        parts.push((after, until, done, cursor, roots));
    }
    assert_eq!(at, body.len());
    (seq, prev, source, parts)
}

/// An index entry as (blob id, pack id, offset).
pub type RefIndexEntry = ([u8; 32], [u8; 32], u64);

/// Decodes an index segment body: (pack ids, entries).
pub fn segment(body: &[u8]) -> (Vec<[u8; 32]>, Vec<RefIndexEntry>) {
    let np = u32_at(body, 0) as usize;
    let packs: Vec<[u8; 32]> = (0..np)
        .map(|i| body[4 + i * 32..36 + i * 32].try_into().unwrap())
        .collect();
    let mut at = 4 + np * 32;
    let ns = u32_at(body, at) as usize;
    at += 4 + ns * 32;
    let ne = u32_at(body, at) as usize;
    at += 4;
    let entries = (0..ne)
        .map(|i| {
            let e = &body[at + i * 56..at + (i + 1) * 56];
            (
                e[..32].try_into().unwrap(),
                packs[u32_at(e, 32) as usize],
                u64_at(e, 36),
            )
        })
        .collect();
    (packs, entries)
}

/// Decodes a leaf page's keys and seqs.
pub fn leaf_keys(body: &[u8]) -> Vec<(String, u64)> {
    assert_eq!(body[0], 0, "leaf");
    let n = u32_at(body, 1) as usize;
    let mut at = 5;
    let mut out = Vec::new();
    for _ in 0..n {
        let (key, next) = str16(body, at);
        at = next;
        let seq = u64_at(body, at);
        at += 8;
        let kind = body[at];
        at += 1;
        if kind == 1 {
            at += 8 + 8 + 4;
            at = str16(body, at).1;
            at = str16(body, at).1;
            for _ in 0..3 {
                let c = u16_at(body, at) as usize;
                at += 2;
                for _ in 0..c {
                    at = str16(body, at).1;
                    at = str16(body, at).1;
                }
            }
            let c = u32_at(body, at) as usize;
            at += 4 + 32 * c;
        }
        out.push((key, seq));
    }
    assert_eq!(at, body.len());
    out
}
