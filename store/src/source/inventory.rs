//! S3 Inventory reports as a planning aid: the report's keys, sampled
//! while streaming its CSV files, give partition boundaries at key-count
//! quantiles without listing the bucket.
//!
//! A report is a `manifest.json` naming CSV files (gzip-compressed as S3
//! writes them, or plain) and a `fileSchema` that says which column holds
//! the key. Keys in CSV reports are URL-encoded. The manifest is read from
//! a path or `s3://bucket/key`; data files from the manifest's bucket
//! (`destinationBucket`) or, for a local copy, from the directory tree the
//! manifest sits in. Boundaries are only a plan: a stale or partial report
//! makes partitions uneven, never loses a key.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Keys kept in the sample.
const SAMPLE: usize = 20_000;

/// Where the report's files are.
enum Store {
    Dir(PathBuf),
    #[cfg(feature = "s3")]
    Bucket(aws_sdk_s3::Client, String),
}

/// An opened inventory report.
pub struct Inventory {
    store: Store,
    files: Vec<String>,
    key_column: usize,
    objects: u64,
    /// Only keys under this prefix count (relative to it).
    prefix: String,
}

#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(rename = "destinationBucket", default)]
    destination_bucket: String,
    #[serde(rename = "fileFormat", default)]
    file_format: String,
    #[serde(rename = "fileSchema", default)]
    file_schema: String,
    files: Vec<ManifestFile>,
}

#[derive(serde::Deserialize)]
struct ManifestFile {
    key: String,
}

impl Inventory {
    /// Opens the report whose manifest is at `manifest` (a path or an
    /// `s3://` URL).
    pub async fn open(
        manifest: &str,
        endpoint_url: Option<&str>,
        path_style: bool,
    ) -> Result<Self> {
        let (bytes, store) = if let Some(rest) = manifest.strip_prefix("s3://") {
            #[cfg(feature = "s3")]
            {
                let (bucket, key) = rest
                    .split_once('/')
                    .ok_or_else(|| Error::config(format!("{manifest}: no key after the bucket")))?;
                let client = crate::backend::s3::client(endpoint_url, path_style).await;
                let body = get_all(&client, bucket, key).await?;
                (body, Store::Bucket(client, bucket.to_string()))
            }
            #[cfg(not(feature = "s3"))]
            {
                let _ = (rest, endpoint_url, path_style);
                return Err(Error::config("this build reads no S3 inventory"));
            }
        } else {
            let _ = (endpoint_url, path_style);
            let bytes = std::fs::read(manifest)
                .map_err(|e| Error::from(e).context(manifest.to_string()))?;
            let dir = Path::new(manifest)
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            (bytes, Store::Dir(dir))
        };
        Self::from_manifest(&bytes, store, manifest)
    }

    fn from_manifest(bytes: &[u8], store: Store, name: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("{name}: not an inventory manifest: {e}")))?;
        if !m.file_format.is_empty() && !m.file_format.eq_ignore_ascii_case("csv") {
            return Err(Error::config(format!(
                "{name}: inventory format {} (only CSV reports are read)",
                m.file_format
            )));
        }
        let key_column = m
            .file_schema
            .split(',')
            .position(|c| c.trim().eq_ignore_ascii_case("key"))
            .ok_or_else(|| Error::corrupt(format!("{name}: fileSchema has no Key column")))?;
        // Data files live in the report's destination bucket.
        #[cfg(feature = "s3")]
        let store = match store {
            Store::Bucket(client, bucket) => {
                let dest = m.destination_bucket.rsplit(':').next().unwrap_or_default();
                let bucket = if dest.is_empty() {
                    bucket
                } else {
                    dest.to_string()
                };
                Store::Bucket(client, bucket)
            }
            other => other,
        };
        let _ = &m.destination_bucket;
        Ok(Inventory {
            store,
            files: m.files.into_iter().map(|f| f.key).collect(),
            key_column,
            objects: 0,
            prefix: String::new(),
        })
    }

    /// Counts only keys under `prefix`, relative to it (a source prefix).
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// Objects seen by the last [`Inventory::boundaries`] call.
    pub fn objects(&self) -> u64 {
        self.objects
    }

    async fn read_file(&self, key: &str) -> Result<Vec<u8>> {
        match &self.store {
            Store::Dir(dir) => {
                // A local copy keeps the bucket's layout somewhere above
                // the manifest, or holds the files beside it.
                let candidates = dir
                    .ancestors()
                    .map(|a| a.join(key))
                    .chain(Path::new(key).file_name().map(|f| dir.join(f)));
                for path in candidates {
                    if path.is_file() {
                        return std::fs::read(&path)
                            .map_err(|e| Error::from(e).context(path.display().to_string()));
                    }
                }
                Err(Error::not_found(format!(
                    "inventory file {key} (looked under {} and above)",
                    dir.display()
                )))
            }
            #[cfg(feature = "s3")]
            Store::Bucket(client, bucket) => get_all(client, bucket, key).await,
        }
    }

    /// About `target - 1` boundaries at key-count quantiles of a uniform
    /// sample of the report's keys (sorted, unique).
    pub async fn boundaries(&mut self, target: usize) -> Result<Vec<String>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut sample: Vec<String> = Vec::new();
        let mut seen = 0u64;
        for f in self.files.clone() {
            let raw = self.read_file(&f).await?;
            let reader: Box<dyn Read> = if raw.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::read::MultiGzDecoder::new(&raw[..]))
            } else {
                Box::new(&raw[..])
            };
            for line in BufReader::new(reader).lines() {
                let line =
                    line.map_err(|e| Error::from(e).context(format!("inventory file {f}")))?;
                let Some(key) = csv_field(&line, self.key_column).map(|k| url_decode(&k)) else {
                    continue;
                };
                let Some(key) = key.strip_prefix(&self.prefix).filter(|k| !k.is_empty()) else {
                    continue;
                };
                seen += 1;
                if sample.len() < SAMPLE {
                    sample.push(key.to_string());
                } else {
                    let j = rng.gen_range(0..seen);
                    if let Some(slot) = usize::try_from(j).ok().and_then(|j| sample.get_mut(j)) {
                        *slot = key.to_string();
                    }
                }
            }
        }
        self.objects = seen;
        sample.sort();
        sample.dedup();
        let want = target.saturating_sub(1).min(sample.len());
        let mut out: Vec<String> = (1..=want)
            .filter_map(|i| sample.get(i * sample.len() / (want + 1)).cloned())
            .collect();
        out.dedup();
        Ok(out)
    }
}

/// The whole body of `bucket/key` (manifests and report files are small).
#[cfg(feature = "s3")]
async fn get_all(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| crate::backend::s3::map_err(e, key))?;
    Ok(out
        .body
        .collect()
        .await
        .map_err(|e| Error::new(crate::error::ErrorKind::Transient, format!("{key}: {e}")))?
        .into_bytes()
        .to_vec())
}

/// Field `n` of one CSV line (fields may be quoted, `""` escapes a quote).
fn csv_field(line: &str, n: usize) -> Option<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields.into_iter().nth(n)
}

/// Decodes `%XX` escapes and `+` (space), as S3 Inventory writes keys.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn samples_boundaries_from_gzipped_csv_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("dest/src-bucket/config/data");
        std::fs::create_dir_all(&data).unwrap();
        let mut files = Vec::new();
        for f in 0..3 {
            let name = format!("dest/src-bucket/config/data/part-{f}.csv.gz");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for i in 0..1000 {
                let k = f * 1000 + i;
                writeln!(gz, "\"src-bucket\",\"pre/tenant%2F{k:05}+a.txt\",\"12\",\"2026-11-27T00:00:00.000Z\",\"etag\"").unwrap();
            }
            std::fs::write(dir.path().join(&name), gz.finish().unwrap()).unwrap();
            files.push(serde_json::json!({"key": name, "size": 1, "MD5checksum": "x"}));
        }
        let manifest_dir = dir.path().join("dest/src-bucket/config/2026-11-27T00-00Z");
        std::fs::create_dir_all(&manifest_dir).unwrap();
        let manifest = manifest_dir.join("manifest.json");
        std::fs::write(
            &manifest,
            serde_json::to_vec(&serde_json::json!({
                "sourceBucket": "src-bucket",
                "destinationBucket": "arn:aws:s3:::dest",
                "fileFormat": "CSV",
                "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
                "files": files,
            }))
            .unwrap(),
        )
        .unwrap();
        let mut inv = Inventory::open(manifest.to_str().unwrap(), None, false)
            .await
            .unwrap()
            .under("pre/");
        let b = inv.boundaries(4).await.unwrap();
        assert_eq!(inv.objects(), 3000);
        assert_eq!(
            b,
            [
                "tenant/00750 a.txt",
                "tenant/01500 a.txt",
                "tenant/02250 a.txt"
            ]
        );
    }

    #[test]
    fn csv_fields_and_escapes() {
        assert_eq!(csv_field(r#""a","b,c","d""e""#, 1).as_deref(), Some("b,c"));
        assert_eq!(csv_field(r#""a","b,c","d""e""#, 2).as_deref(), Some("d\"e"));
        assert_eq!(csv_field("a,b", 5), None);
        assert_eq!(url_decode("a%2Fb+c%zz"), "a/b c%zz");
    }

    #[test]
    fn a_manifest_without_a_key_column_is_refused() {
        let m = br#"{"fileFormat":"CSV","fileSchema":"Bucket, Size","files":[]}"#;
        let e = Inventory::from_manifest(m, Store::Dir(PathBuf::from(".")), "m.json")
            .err()
            .unwrap();
        assert!(e.to_string().contains("no Key column"), "{e}");
        let m = br#"{"fileFormat":"ORC","fileSchema":"Key","files":[]}"#;
        assert!(Inventory::from_manifest(m, Store::Dir(PathBuf::from(".")), "m.json").is_err());
    }
}
