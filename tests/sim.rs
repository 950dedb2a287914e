//! A simulated bucket: an in-memory versioned object store that is a
//! [`Source`] and emits S3's EventBridge events for every change, with a
//! clock the test moves by hand. Lets a test play a day of changes in
//! seconds and know the exact state at every instant.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use strata_store::changes::{ChangeEvent, ChangeKind};
use strata_store::source::{Source, SourceObject};
use strata_store::{Error, ErrorKind, Result};

/// The simulation's clock.
pub use strata_store::continuous::ManualClock as SimClock;

/// One object's current version.
#[derive(Clone, Debug)]
pub struct SimObject {
    /// Content.
    pub data: Vec<u8>,
    /// ETag (quoted, as S3 lists it).
    pub etag: String,
    /// Version id.
    pub version_id: String,
    /// Last modified, ns.
    pub mtime_ns: i64,
}

/// A failure injected into reads of one key.
#[derive(Clone, Copy, Debug)]
pub enum ReadFault {
    /// The body ends (EOF) after this many bytes.
    Truncate(usize),
    /// The connection resets after this many bytes.
    Reset(usize),
}

/// Yields `data`, then EOF or a reset where the fault says.
struct FaultyReader {
    data: Cursor<Vec<u8>>,
    fault: Option<ReadFault>,
}

impl Read for FaultyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.data.position() as usize;
        let limit = match self.fault {
            Some(ReadFault::Truncate(n) | ReadFault::Reset(n)) => n,
            None => usize::MAX,
        };
        if at >= limit {
            return match self.fault {
                Some(ReadFault::Reset(_)) => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset by peer (injected)",
                )),
                _ => Ok(0),
            };
        }
        let n = buf.len().min(limit - at);
        self.data.read(&mut buf[..n])
    }
}

#[derive(Default)]
struct State {
    faults: BTreeMap<String, (ReadFault, u32)>,
    /// Changes applied when a key is next opened (None: a deletion).
    on_open: BTreeMap<String, Option<Vec<u8>>>,
    objects: BTreeMap<String, SimObject>,
    versions: u64,
    sequencer: u64,
    events: Vec<ChangeEvent>,
}

/// A versioned bucket held in memory.
pub struct SimBucket {
    name: String,
    state: Mutex<State>,
}

impl SimBucket {
    /// An empty bucket.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(SimBucket {
            name: name.into(),
            state: Mutex::default(),
        })
    }

    /// Puts `data` under `key` at `time_ns`, and queues its event.
    pub fn put(&self, key: &str, data: Vec<u8>, time_ns: i64) {
        let mut s = self.state.lock().unwrap();
        s.versions += 1;
        s.sequencer += 1;
        let etag = fnv_etag(&data);
        let version_id = format!("v{:08}", s.versions);
        let event = ChangeEvent {
            bucket: self.name.clone(),
            key: key.into(),
            kind: ChangeKind::Created,
            size: Some(data.len() as u64),
            etag: etag.clone(),
            version_id: version_id.clone(),
            sequencer: format!("{:016X}", s.sequencer),
            time_ns,
        };
        s.events.push(event);
        s.objects.insert(
            key.into(),
            SimObject {
                data,
                etag: format!("\"{etag}\""),
                version_id,
                mtime_ns: time_ns,
            },
        );
    }

    /// Deletes `key` at `time_ns` (a delete marker), and queues its event.
    pub fn delete(&self, key: &str, time_ns: i64) {
        let mut s = self.state.lock().unwrap();
        if s.objects.remove(key).is_none() {
            return;
        }
        s.versions += 1;
        s.sequencer += 1;
        let event = ChangeEvent {
            bucket: self.name.clone(),
            key: key.into(),
            kind: ChangeKind::Deleted,
            size: None,
            etag: String::new(),
            version_id: format!("v{:08}", s.versions),
            sequencer: format!("{:016X}", s.sequencer),
            time_ns,
        };
        s.events.push(event);
    }

    /// The next `times` reads of `key` fail with `fault`.
    pub fn fail_reads(&self, key: &str, fault: ReadFault, times: u32) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(key.into(), (fault, times));
    }

    /// When `key` is next opened, it is first overwritten with `data` (or
    /// deleted when `None`): a change between listing and GET.
    pub fn change_on_open(&self, key: &str, data: Option<Vec<u8>>) {
        self.state.lock().unwrap().on_open.insert(key.into(), data);
    }

    /// The live keys.
    pub fn keys(&self) -> Vec<String> {
        self.state.lock().unwrap().objects.keys().cloned().collect()
    }

    /// Key → content, as of now.
    pub fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        let s = self.state.lock().unwrap();
        s.objects
            .iter()
            .map(|(k, o)| (k.clone(), o.data.clone()))
            .collect()
    }

    /// The events queued since the last call.
    pub fn take_events(&self) -> Vec<ChangeEvent> {
        std::mem::take(&mut self.state.lock().unwrap().events)
    }
}

/// Writes `events` as one EventBridge batch file `dir/name`, atomically.
pub fn write_batch(dir: &Path, name: &str, events: &[ChangeEvent]) {
    strata_store::changes::files::write_batch_file(dir, name, events).unwrap();
}

fn fnv_etag(data: &[u8]) -> String {
    // FNV-1a and the length: the simulation only needs distinct ETags.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{:016x}", data.len())
}

#[async_trait::async_trait]
impl Source for SimBucket {
    fn describe(&self) -> String {
        format!("sim://{}/", self.name)
    }

    async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
        let s = self.state.lock().unwrap();
        let list = s
            .objects
            .iter()
            .map(|(k, o)| listed(k, o))
            .collect::<Vec<_>>();
        Ok((list, 0))
    }

    fn open(&self, obj: &SourceObject) -> Result<(Box<dyn Read + Send>, SourceObject)> {
        let change = self.state.lock().unwrap().on_open.remove(&obj.key);
        match change {
            Some(Some(data)) => self.put(&obj.key, data, 1),
            Some(None) => self.delete(&obj.key, 1),
            None => {}
        }
        let mut s = self.state.lock().unwrap();
        let fault = match s.faults.get_mut(&obj.key) {
            Some((f, n)) if *n > 0 => {
                *n -= 1;
                Some(*f)
            }
            _ => None,
        };
        let Some(o) = s.objects.get(&obj.key) else {
            return Err(Error::not_found(obj.key.clone()));
        };
        let pinned = !obj.version_id.is_empty() && obj.version_id != o.version_id;
        if pinned || (!obj.etag.is_empty() && obj.etag != o.etag) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{}: precondition failed", obj.key),
            ));
        }
        let reader = FaultyReader {
            data: Cursor::new(o.data.clone()),
            fault,
        };
        Ok((Box::new(reader), listed(&obj.key, o)))
    }

    fn restat(&self, obj: &SourceObject) -> Result<Option<SourceObject>> {
        let s = self.state.lock().unwrap();
        Ok(s.objects.get(&obj.key).map(|o| listed(&obj.key, o)))
    }

    fn key_for_event(&self, bucket: &str, key: &str) -> Option<String> {
        (bucket == self.name).then(|| key.to_string())
    }
}

fn listed(key: &str, o: &SimObject) -> SourceObject {
    SourceObject {
        key: key.into(),
        size: o.data.len() as u64,
        mtime_ns: o.mtime_ns,
        etag: o.etag.clone(),
        version_id: o.version_id.clone(),
        system: vec![("content-type".into(), "text/plain".into())],
        ..Default::default()
    }
}
