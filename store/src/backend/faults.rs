//! Fault injection for the vault backend (tests and drills): rules that
//! make matching requests fail, stall, come back truncated or with a bit
//! flipped, or reset, a given number of times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::{Backend, ByteRange, DynBackend, GetResult, Listed};
use crate::config::LockMode;
use crate::error::{Error, ErrorKind, Result};

/// Which requests a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create-only writes.
    Put,
    /// Reads (whole or ranged).
    Get,
    /// Listings.
    List,
}

/// What happens to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// It fails with this kind (a `Transient` is a 500/503/SlowDown).
    Error(ErrorKind),
    /// It is answered after this delay.
    Delay(Duration),
    /// A read returns only this many bytes.
    Truncate(usize),
    /// A read returns the data with this bit flipped (modulo its length).
    BitFlip(u64),
    /// The connection resets: a `Transient` failure after the request was
    /// sent (a put may or may not have landed: this one has).
    ResetAfter,
}

/// Inject `fault` into requests `op` on names starting with `prefix`,
/// after letting `skip` of them through, `times` times (`u32::MAX`: always).
#[derive(Clone, Debug)]
pub struct Rule {
    /// Operation.
    pub op: Op,
    /// Name prefix.
    pub prefix: String,
    /// Matching requests to let through first.
    pub skip: u32,
    /// How many to fault.
    pub times: u32,
    /// What to do.
    pub fault: Fault,
}

/// A backend with rules.
pub struct Faulty {
    inner: DynBackend,
    rules: Mutex<Vec<Rule>>,
    injected: AtomicU64,
    /// Names of every put attempted (faulted or not), in order.
    pub attempted_puts: Mutex<Vec<String>>,
}

impl Faulty {
    /// Wraps `inner` with no rules.
    pub fn new(inner: DynBackend) -> Self {
        Faulty {
            inner,
            rules: Mutex::default(),
            injected: AtomicU64::new(0),
            attempted_puts: Mutex::default(),
        }
    }

    /// Adds a rule.
    pub fn add(&self, rule: Rule) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn take(&self, op: Op, name: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        for r in rules.iter_mut() {
            if r.op != op || !name.starts_with(&r.prefix) {
                continue;
            }
            if r.skip > 0 {
                r.skip -= 1;
                continue;
            }
            if r.times == 0 {
                continue;
            }
            if r.times != u32::MAX {
                r.times -= 1;
            }
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Some(r.fault.clone());
        }
        None
    }
}

fn injected(kind: ErrorKind, name: &str) -> Error {
    Error::new(kind, format!("{name}: injected fault"))
}

#[async_trait::async_trait]
impl Backend for Faulty {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.attempted_puts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
        match self.take(Op::Put, name) {
            Some(Fault::Error(k)) => Err(injected(k, name)),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.put(name, bytes).await
            }
            Some(Fault::ResetAfter) => {
                self.inner.put(name, bytes).await?;
                Err(injected(ErrorKind::Transient, name))
            }
            _ => self.inner.put(name, bytes).await,
        }
    }

    async fn get(&self, name: &str, range: ByteRange) -> Result<GetResult> {
        let fault = self.take(Op::Get, name);
        if let Some(Fault::Error(k)) = fault {
            return Err(injected(k, name));
        }
        if let Some(Fault::Delay(d)) = fault {
            tokio::time::sleep(d).await;
        }
        let mut r = self.inner.get(name, range).await?;
        match fault {
            Some(Fault::Truncate(n)) => r.bytes = r.bytes.slice(..n.min(r.bytes.len())),
            Some(Fault::BitFlip(bit)) if !r.bytes.is_empty() => {
                let mut v = r.bytes.to_vec();
                let bit = bit % (v.len() as u64 * 8);
                if let Some(b) = v.get_mut((bit / 8) as usize) {
                    *b ^= 1 << (bit % 8);
                }
                r.bytes = Bytes::from(v);
            }
            Some(Fault::ResetAfter) => return Err(injected(ErrorKind::Transient, name)),
            _ => {}
        }
        Ok(r)
    }

    async fn head(&self, name: &str) -> Result<u64> {
        self.inner.head(name).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        match self.take(Op::List, prefix) {
            Some(Fault::Error(k)) => Err(injected(k, prefix)),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.list(prefix).await
            }
            _ => self.inner.list(prefix).await,
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.inner.request_counts()
    }

    fn set_retention(&self, mode: LockMode, days: u32) {
        self.inner.set_retention(mode, days);
    }

    async fn versions(&self, name: &str) -> Result<Vec<String>> {
        self.inner.versions(name).await
    }

    async fn get_version(&self, name: &str, version: &str) -> Result<Bytes> {
        self.inner.get_version(name, version).await
    }

    async fn retention(&self, name: &str) -> Result<Option<(LockMode, i64)>> {
        self.inner.retention(name).await
    }
}
