//! An in-memory backend for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{slice_range, Backend, ByteRange, GetResult, Listed};
use crate::error::{Error, ErrorKind, Result};

/// Objects in a map; create-only like every backend.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces an object's bytes (tests that simulate damage).
    pub fn tamper(&self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut map = self.objects.lock().expect("memory backend lock");
        if let Some(b) = map.get_mut(name) {
            let mut v = b.to_vec();
            f(&mut v);
            *b = Bytes::from(v);
        }
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let mut map = self.objects.lock().expect("memory backend lock");
        if map.contains_key(name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        map.insert(name.to_string(), bytes);
        Ok(())
    }

    async fn get(&self, name: &str, range: ByteRange) -> Result<GetResult> {
        let map = self.objects.lock().expect("memory backend lock");
        let all = map
            .get(name)
            .ok_or_else(|| Error::not_found(format!("{name} not found")))?;
        let (s, e) = slice_range(all, &range);
        Ok(GetResult {
            bytes: all.slice(s..e),
            total_len: all.len() as u64,
        })
    }

    async fn head(&self, name: &str) -> Result<u64> {
        let map = self.objects.lock().expect("memory backend lock");
        map.get(name)
            .map(|b| b.len() as u64)
            .ok_or_else(|| Error::not_found(format!("{name} not found")))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let map = self.objects.lock().expect("memory backend lock");
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Listed {
                name: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.objects
            .lock()
            .expect("memory backend lock")
            .remove(name);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run_all(&super::MemoryBackend::new()).await;
    }
}
