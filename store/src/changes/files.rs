//! A feed of event batch files, in a directory or under a bucket prefix,
//! as a delivery stream (Amazon Data Firehose from EventBridge) writes
//! them: `YYYY/MM/DD/HH/stream-…` names that sort in delivery order.
//!
//! The position is the name of the last file consumed; a read takes the
//! files whose names sort after it, oldest first, up to a cap on events
//! per cycle. Files must appear whole (write, then rename; S3 PUTs are
//! atomic); names starting with `.` are ignored. A file that appears
//! late under a name sorting before the position is not read: the
//! periodic listing reconciliation catches its changes.

use std::path::PathBuf;

#[cfg(feature = "s3")]
use aws_sdk_s3::Client;

use super::eventbridge::parse_batch;
use super::{ChangeEvent, ChangeFeed, FeedPosition};
#[cfg(feature = "s3")]
use crate::backend::s3::{client, map_err, S3Options};
use crate::error::{Error, Result};

/// Stop adding files to a cycle after this many events.
pub const MAX_EVENTS_PER_READ: usize = 2_000_000;

enum Location {
    Dir(PathBuf),
    #[cfg(feature = "s3")]
    Bucket {
        client: Client,
        bucket: String,
        prefix: String,
    },
}

/// Event batch files in a directory or under `s3://bucket/prefix`.
pub struct FileFeed {
    location: Location,
    max_events: usize,
}

impl FileFeed {
    /// A feed from the batch files under directory `dir`.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        FileFeed {
            location: Location::Dir(dir.into()),
            max_events: MAX_EVENTS_PER_READ,
        }
    }

    /// A feed from the batch files under `s3://bucket/prefix`.
    #[cfg(feature = "s3")]
    pub async fn bucket(url: &str, endpoint_url: Option<&str>, path_style: bool) -> Result<Self> {
        let o = S3Options::from_url(url)?;
        Ok(FileFeed {
            location: Location::Bucket {
                client: client(endpoint_url, path_style).await,
                bucket: o.bucket,
                prefix: o.prefix,
            },
            max_events: MAX_EVENTS_PER_READ,
        })
    }

    /// Caps the events one read returns (at file granularity).
    pub fn with_max_events(mut self, n: usize) -> Self {
        self.max_events = n.max(1);
        self
    }

    async fn names_after(&self, position: Option<&str>) -> Result<Vec<String>> {
        match &self.location {
            Location::Dir(dir) => {
                let dir = dir.clone();
                let after = position.map(str::to_string);
                crate::blocking::run("feed listing", move || list_dir(&dir, after.as_deref())).await
            }
            #[cfg(feature = "s3")]
            Location::Bucket {
                client,
                bucket,
                prefix,
            } => {
                let mut names = Vec::new();
                let mut token = None;
                loop {
                    let page = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_start_after(position.map(|p| format!("{prefix}{p}")))
                        .set_continuation_token(token.take())
                        .send()
                        .await
                        .map_err(|e| map_err(e, "listing the change feed"))?;
                    for o in page.contents() {
                        if let Some(name) = o.key().and_then(|k| k.strip_prefix(prefix.as_str())) {
                            if !name.is_empty() && !hidden(name) {
                                names.push(name.to_string());
                            }
                        }
                    }
                    match page.next_continuation_token() {
                        Some(t) if page.is_truncated() == Some(true) => {
                            token = Some(t.to_string());
                        }
                        _ => break,
                    }
                }
                names.sort();
                Ok(names)
            }
        }
    }

    async fn fetch(&self, name: &str) -> Result<Vec<u8>> {
        match &self.location {
            Location::Dir(dir) => {
                let path = dir.join(name);
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| Error::from(e).context(path.display().to_string()))
            }
            #[cfg(feature = "s3")]
            Location::Bucket {
                client,
                bucket,
                prefix,
            } => {
                let key = format!("{prefix}{name}");
                let out = client
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| map_err(e, &key))?;
                let body = out.body.collect().await.map_err(|e| {
                    Error::new(crate::ErrorKind::Transient, format!("reading {key}: {e}"))
                })?;
                Ok(body.to_vec())
            }
        }
    }
}

/// Writes `events` as one batch file `dir/name` in EventBridge's format,
/// atomically (a hidden temporary file, then a rename), as a delivery
/// stream would: for tools that replay changes, simulations and tests.
pub fn write_batch_file(dir: &std::path::Path, name: &str, events: &[ChangeEvent]) -> Result<()> {
    let path = dir.join(name);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let mut body = String::new();
    for e in events {
        body.push_str(&super::eventbridge::to_json(e).to_string());
        body.push('\n');
    }
    let tmp = parent.join(format!(".{}.tmp", name.replace('/', "_")));
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

fn hidden(name: &str) -> bool {
    name.rsplit('/').next().is_some_and(|f| f.starts_with('.'))
}

fn list_dir(root: &std::path::Path, after: Option<&str>) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && prefix.is_empty() => {
                return Err(Error::not_found(format!(
                    "change feed directory {}",
                    root.display()
                )))
            }
            Err(e) => return Err(Error::from(e).context(dir.display().to_string())),
        };
        for ent in rd {
            let ent = ent?;
            let Some(file) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if hidden(&file) {
                continue;
            }
            let name = format!("{prefix}{file}");
            let ty = ent.file_type()?;
            if ty.is_dir() {
                stack.push((ent.path(), format!("{name}/")));
            } else if ty.is_file() && after.is_none_or(|a| name.as_str() > a) {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

#[async_trait::async_trait]
impl ChangeFeed for FileFeed {
    fn describe(&self) -> String {
        match &self.location {
            Location::Dir(d) => d.display().to_string(),
            #[cfg(feature = "s3")]
            Location::Bucket { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    async fn read(&self, position: Option<&str>) -> Result<(Vec<ChangeEvent>, FeedPosition)> {
        let mut events = Vec::new();
        let mut last = position.unwrap_or_default().to_string();
        let (mut malformed, mut files) = (0, 0);
        for name in self.names_after(position).await? {
            if events.len() >= self.max_events {
                break;
            }
            let batch = parse_batch(&self.fetch(&name).await?);
            malformed += batch.malformed;
            files += 1;
            events.extend(batch.events);
            last = name;
        }
        if malformed > 0 {
            tracing::warn!(
                malformed,
                "change feed records skipped as malformed; a listing reconciliation will catch what they named"
            );
        }
        tracing::debug!(files, events = events.len(), position = %last, "change feed read");
        Ok((events, last))
    }
}

#[cfg(test)]
mod tests {
    use super::super::eventbridge::to_json;
    use super::super::ChangeKind;
    use super::*;

    fn event(key: &str, seq: &str) -> ChangeEvent {
        ChangeEvent {
            bucket: "b".into(),
            key: key.into(),
            kind: ChangeKind::Created,
            size: Some(1),
            etag: "e".into(),
            version_id: String::new(),
            sequencer: seq.into(),
            time_ns: 1_000_000_000,
        }
    }

    #[tokio::test]
    async fn reads_files_after_the_position_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, keys: &[&str]| {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let body: String = keys
                .iter()
                .map(|k| format!("{}\n", to_json(&event(k, "01"))))
                .collect();
            std::fs::write(p, body).unwrap();
        };
        write("2026/11/27/10/b", &["two"]);
        write("2026/11/27/09/a", &["one", "uno"]);
        write("2026/11/27/10/.tmp", &["hidden"]);
        let feed = FileFeed::dir(d.path());
        let (events, pos) = feed.read(None).await.unwrap();
        let keys: Vec<_> = events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["one", "uno", "two"]);
        assert_eq!(pos, "2026/11/27/10/b");
        let (events, pos2) = feed.read(Some(&pos)).await.unwrap();
        assert!(events.is_empty());
        assert_eq!(pos2, pos);
        write("2026/11/27/11/c", &["three"]);
        let (events, _) = feed.read(Some(&pos)).await.unwrap();
        assert_eq!(events.len(), 1);
        // A cap stops at file granularity.
        let (events, pos3) = FileFeed::dir(d.path())
            .with_max_events(1)
            .read(None)
            .await
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(pos3, "2026/11/27/09/a");
    }

    #[tokio::test]
    async fn a_missing_directory_is_not_found() {
        let e = FileFeed::dir("/nonexistent/feed")
            .read(None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    }
}
