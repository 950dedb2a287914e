//! A synthetic bucket: objects generated on the fly from (index, version),
//! so a million-object source costs a few bytes per object of memory.
//! Emits S3 EventBridge events for every change it makes.

use std::io::Cursor;
use std::sync::Mutex;

use strata_store::changes::{ChangeEvent, ChangeKind};
use strata_store::source::{Source, SourceObject};
use strata_store::{Error, ErrorKind, Result};

/// xorshift64*, the generator for sizes and contents.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct State {
    /// Version of each object; 0 = absent.
    versions: Vec<u32>,
    mtimes: Vec<i64>,
    sequencer: u64,
    events: Vec<ChangeEvent>,
}

/// A bucket of `capacity` possible keys, some of them live.
pub struct Synth {
    name: String,
    /// Indices in key order.
    order: Vec<u32>,
    state: Mutex<State>,
}

/// The key of object `i`: `tenant/<t>/attachments/<i>/file.json`.
pub fn key(i: u32) -> String {
    format!("tenant/{:03}/attachments/{i:08}/file.json", i % 997)
}

fn index_of(key: &str) -> Option<u32> {
    key.split('/').nth(3)?.parse().ok()
}

fn mix(i: u32, v: u32) -> u64 {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ (u64::from(i) << 20) ^ u64::from(v));
    r.next();
    r.next()
}

/// Object `i` at version `v`: 256 B to 4 KiB of JSON-like text.
pub fn content(i: u32, v: u32) -> Vec<u8> {
    let mut r = Rng(mix(i, v) | 1);
    let len = 256 + r.below(3840) as usize;
    let mut out = Vec::with_capacity(len + 32);
    out.extend_from_slice(format!("{{\"id\":{i},\"v\":{v},\"data\":\"").as_bytes());
    while out.len() < len {
        let w = r.next();
        for b in w.to_le_bytes() {
            out.push(b"abcdefghijklmnopqrstuvwxyz0123456789 ,.:"[usize::from(b) % 40]);
        }
    }
    out.truncate(len);
    out
}

impl Synth {
    /// `live` objects out of `capacity` possible keys, all at version 1.
    pub fn new(name: &str, capacity: u32, live: u32, time_ns: i64) -> Self {
        let mut order: Vec<u32> = (0..capacity).collect();
        order.sort_by_cached_key(|&i| key(i));
        let versions = (0..capacity).map(|i| u32::from(i < live)).collect();
        Synth {
            name: name.into(),
            order,
            state: Mutex::new(State {
                versions,
                mtimes: vec![time_ns; capacity as usize],
                sequencer: 0,
                events: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live objects.
    pub fn live(&self) -> usize {
        self.lock().versions.iter().filter(|&&v| v > 0).count()
    }

    /// Changes `n` objects at `time_ns`: 70% overwrites, 15% deletions,
    /// 15% creations; queues their events.
    pub fn mutate(&self, rng: &mut Rng, n: usize, time_ns: i64) {
        let mut s = self.lock();
        let cap = s.versions.len() as u64;
        let mut done = 0;
        while done < n {
            let i = rng.below(cap) as usize;
            let roll = rng.below(100);
            let live = s.versions[i] > 0;
            let kind = match (roll, live) {
                (0..70, true) => ChangeKind::Created,
                (70..85, true) => ChangeKind::Deleted,
                (85.., false) => ChangeKind::Created,
                _ => continue,
            };
            s.sequencer += 1;
            // Versions are never reused: a re-created object is new.
            s.versions[i] = match kind {
                ChangeKind::Deleted => 0,
                ChangeKind::Created => 1 + s.sequencer as u32,
            };
            s.mtimes[i] = time_ns;
            let v = s.versions[i];
            let idx = i as u32;
            let event = ChangeEvent {
                bucket: self.name.clone(),
                key: key(idx),
                kind,
                size: (v > 0).then(|| content(idx, v).len() as u64),
                etag: if v > 0 {
                    format!("{:016x}", mix(idx, v))
                } else {
                    String::new()
                },
                version_id: format!("v{v}"),
                sequencer: format!("{:016X}", s.sequencer),
                time_ns,
            };
            s.events.push(event);
            done += 1;
        }
    }

    /// The events queued since the last call.
    pub fn take_events(&self) -> Vec<ChangeEvent> {
        std::mem::take(&mut self.lock().events)
    }

    fn object(&self, i: u32, v: u32, mtime_ns: i64) -> SourceObject {
        SourceObject {
            key: key(i),
            size: content(i, v).len() as u64,
            mtime_ns,
            etag: format!("\"{:016x}\"", mix(i, v)),
            version_id: format!("v{v}"),
            system: vec![("content-type".into(), "application/json".into())],
            ..Default::default()
        }
    }
}

#[async_trait::async_trait]
impl Source for Synth {
    fn describe(&self) -> String {
        format!("synthetic://{}/", self.name)
    }

    async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
        let s = self.lock();
        let out = self
            .order
            .iter()
            .filter(|&&i| s.versions[i as usize] > 0)
            .map(|&i| self.object(i, s.versions[i as usize], s.mtimes[i as usize]))
            .collect();
        Ok((out, 0))
    }

    fn open(&self, obj: &SourceObject) -> Result<(Box<dyn std::io::Read + Send>, SourceObject)> {
        let i = index_of(&obj.key).ok_or_else(|| Error::not_found(obj.key.clone()))?;
        let s = self.lock();
        let v = s.versions[i as usize];
        if v == 0 {
            return Err(Error::not_found(obj.key.clone()));
        }
        if !obj.version_id.is_empty() && obj.version_id != format!("v{v}") {
            return Err(Error::new(ErrorKind::AlreadyExists, "precondition failed"));
        }
        let meta = self.object(i, v, s.mtimes[i as usize]);
        Ok((Box::new(Cursor::new(content(i, v))), meta))
    }

    fn restat(&self, obj: &SourceObject) -> Result<Option<SourceObject>> {
        let Some(i) = index_of(&obj.key) else {
            return Ok(None);
        };
        let s = self.lock();
        let v = s.versions.get(i as usize).copied().unwrap_or(0);
        Ok((v > 0).then(|| self.object(i, v, s.mtimes[i as usize])))
    }

    fn key_for_event(&self, bucket: &str, key: &str) -> Option<String> {
        (bucket == self.name).then(|| key.to_string())
    }
}
