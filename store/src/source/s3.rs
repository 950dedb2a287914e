//! An S3 bucket (or a prefix of it) as a source.
//!
//! Lists with ListObjectsV2, or ListObjectVersions where the bucket is
//! versioned (then every read is pinned to the listed version id);
//! unversioned reads carry `If-Match` on the listed ETag, so a changed
//! object is noticed and re-read rather than stored under stale metadata.
//! A 404 after listing is a deletion. Reads stream: the SDK's body is
//! bridged to a blocking reader, so objects larger than memory work.
//! Entries keep what a restore needs: version id, ETag, size,
//! last-modified, content type and encoding, cache control, content
//! disposition and language, storage class, user metadata and tags.

use std::io::Read;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::types::BucketVersioningStatus;
use aws_sdk_s3::Client;

use super::{KeyRange, ListPage, Source, SourceObject};
use crate::backend::s3::{client, map_err, RequestCounts};
use crate::error::{Error, ErrorKind, Result};

/// A bucket prefix to back up.
pub struct S3Source {
    client: Client,
    bucket: String,
    prefix: String,
    versioned: bool,
    handle: tokio::runtime::Handle,
    /// The `Date` of the latest response, ns since the epoch (0: none yet).
    server_date: Arc<AtomicI64>,
    /// Requests made to the source, by kind.
    pub requests: RequestCounts,
}

/// Records the `Date` header of every response: the server's clock.
#[derive(Debug)]
struct ServerDate(Arc<AtomicI64>);

impl aws_sdk_s3::config::Intercept for ServerDate {
    fn name(&self) -> &'static str {
        "ServerDate"
    }

    fn read_after_transmit(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let date = ctx.response().headers().get("date").and_then(|d| {
            aws_smithy_types::DateTime::from_str(d, aws_smithy_types::date_time::Format::HttpDate)
                .ok()
        });
        if let Some(d) = date {
            self.0.store(ns(Some(&d)), Ordering::Relaxed);
        }
        Ok(())
    }
}

fn ns(t: Option<&aws_sdk_s3::primitives::DateTime>) -> i64 {
    t.map_or(0, |t| {
        t.secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.subsec_nanos()))
    })
}

impl S3Source {
    /// Connects to `s3://bucket/prefix`.
    pub async fn connect(url: &str, endpoint_url: Option<&str>, path_style: bool) -> Result<Self> {
        let o = crate::backend::s3::S3Options::from_url(url)?;
        let server_date = Arc::new(AtomicI64::new(0));
        let client = client(endpoint_url, path_style).await;
        let client = Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(ServerDate(server_date.clone()))
                // The ingest scheduler sees every throttle and retries itself.
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
                .app_name(aws_sdk_s3::config::AppName::new("strata").expect("valid app name"))
                .build(),
        );
        let v = client
            .get_bucket_versioning()
            .bucket(&o.bucket)
            .send()
            .await
            .map_err(|e| map_err(e, &format!("source bucket {}", o.bucket)))?;
        Ok(S3Source {
            versioned: matches!(v.status(), Some(BucketVersioningStatus::Enabled)),
            client,
            bucket: o.bucket,
            prefix: o.prefix,
            handle: tokio::runtime::Handle::current(),
            server_date,
            requests: RequestCounts::default(),
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn relative(&self, key: &str) -> Option<String> {
        key.strip_prefix(&self.prefix)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    }
}

#[async_trait::async_trait]
impl Source for S3Source {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn list(&self) -> Result<(Vec<SourceObject>, u64)> {
        let (range, mut out, mut after) = (KeyRange::all(), Vec::new(), None);
        loop {
            let page = self.list_page(&range, after.as_deref()).await?;
            out.extend(page.objects);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok((out, 0))
    }

    async fn list_page(&self, range: &KeyRange, after: Option<&str>) -> Result<ListPage> {
        let from = after.unwrap_or(&range.after);
        let start = (!from.is_empty()).then(|| self.full(from));
        self.requests.list.fetch_add(1, Ordering::Relaxed);
        let mut objects = Vec::new();
        let (last, truncated) = if self.versioned {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(start)
                .send()
                .await
                .map_err(|e| map_err(e, "listing the source"))?;
            for v in page
                .versions()
                .iter()
                .filter(|v| v.is_latest() == Some(true))
            {
                let Some(key) = v.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                objects.push(SourceObject {
                    key,
                    size: u64::try_from(v.size().unwrap_or(0)).unwrap_or(0),
                    mtime_ns: ns(v.last_modified()),
                    etag: v.e_tag().unwrap_or_default().to_string(),
                    version_id: v.version_id().unwrap_or_default().to_string(),
                    ..Default::default()
                });
            }
            // The page may end inside a key's versions; its latest version
            // came first, so the next page starts after the key.
            let last = page
                .versions()
                .iter()
                .filter_map(|v| v.key())
                .chain(page.delete_markers().iter().filter_map(|d| d.key()))
                .max()
                .map(str::to_string);
            (last, page.is_truncated() == Some(true))
        } else {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_start_after(start)
                .send()
                .await
                .map_err(|e| map_err(e, "listing the source"))?;
            for o in page.contents() {
                let Some(key) = o.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                objects.push(SourceObject {
                    key,
                    size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    mtime_ns: ns(o.last_modified()),
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    ..Default::default()
                });
            }
            let last = page
                .contents()
                .last()
                .and_then(|o| o.key())
                .map(str::to_string);
            (last, page.is_truncated() == Some(true))
        };
        objects.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        objects.dedup_by(|a, b| a.key == b.key);
        let past_end = objects.last().is_some_and(|o| range.is_past(&o.key));
        objects.retain(|o| range.contains(&o.key) && o.key.as_str() > from);
        let next = match last.as_deref().and_then(|k| self.relative(k)) {
            Some(k) if truncated && !past_end && !range.is_past(&k) => Some(k),
            _ => None,
        };
        Ok(ListPage {
            objects,
            skipped: 0,
            next,
        })
    }

    fn paced(&self) -> bool {
        true
    }

    async fn common_prefixes(&self, under: &str) -> Result<Option<Vec<String>>> {
        let mut out = Vec::new();
        let mut token = None;
        // At most ten pages (10,000 prefixes): enough to plan with.
        for _ in 0..10 {
            self.requests.list.fetch_add(1, Ordering::Relaxed);
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(under))
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| map_err(e, "listing the source's prefixes"))?;
            out.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix())
                    .filter_map(|p| self.relative(p)),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(Some(out))
    }

    async fn first_key_after(&self, after: &str) -> Result<Option<String>> {
        self.requests.list.fetch_add(1, Ordering::Relaxed);
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .start_after(self.full(after))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| map_err(e, "probing the source's keys"))?;
        Ok(page
            .contents()
            .first()
            .and_then(|o| o.key())
            .and_then(|k| self.relative(k)))
    }

    fn open(&self, obj: &SourceObject) -> Result<(Box<dyn Read + Send>, SourceObject)> {
        let key = self.full(&obj.key);
        let mut req = self.client.get_object().bucket(&self.bucket).key(&key);
        if !obj.version_id.is_empty() {
            req = req.version_id(&obj.version_id);
        } else if !obj.etag.is_empty() {
            req = req.if_match(&obj.etag);
        }
        self.requests.get.fetch_add(1, Ordering::Relaxed);
        let out = self
            .handle
            .block_on(req.send())
            .map_err(|e| map_err(e, &obj.key))?;
        let mut meta = SourceObject {
            key: obj.key.clone(),
            size: out
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(obj.size),
            mtime_ns: ns(out.last_modified()),
            etag: out.e_tag().unwrap_or(&obj.etag).to_string(),
            version_id: out
                .version_id()
                .map_or(obj.version_id.clone(), str::to_string),
            ..Default::default()
        };
        let system = [
            ("content-type", out.content_type()),
            ("content-encoding", out.content_encoding()),
            ("cache-control", out.cache_control()),
            ("content-disposition", out.content_disposition()),
            ("content-language", out.content_language()),
            ("storage-class", out.storage_class().map(|s| s.as_str())),
        ];
        meta.system = system
            .iter()
            .filter_map(|(k, v)| v.map(|v| ((*k).to_string(), v.to_string())))
            .collect();
        let mut user: Vec<(String, String)> = out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        user.sort();
        meta.user = user;
        if out.tag_count().unwrap_or(0) > 0 {
            self.requests.get.fetch_add(1, Ordering::Relaxed);
            let mut t = self
                .client
                .get_object_tagging()
                .bucket(&self.bucket)
                .key(&key);
            if !meta.version_id.is_empty() {
                t = t.version_id(&meta.version_id);
            }
            let tags = self
                .handle
                .block_on(t.send())
                .map_err(|e| map_err(e, &obj.key))?;
            let mut tags: Vec<(String, String)> = tags
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            tags.sort();
            meta.tags = tags;
        }
        let body = tokio_util::io::SyncIoBridge::new_with_handle(
            out.body.into_async_read(),
            self.handle.clone(),
        );
        Ok((Box::new(body), meta))
    }

    async fn clock_ns(&self) -> Result<Option<i64>> {
        self.requests.head.fetch_add(1, Ordering::Relaxed);
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| map_err(e, &format!("source bucket {}", self.bucket)))?;
        let t = self.server_date.load(Ordering::Relaxed);
        Ok((t > 0).then_some(t))
    }

    fn key_for_event(&self, bucket: &str, key: &str) -> Option<String> {
        (bucket == self.bucket)
            .then(|| self.relative(key))
            .flatten()
    }

    fn restat(&self, obj: &SourceObject) -> Result<Option<SourceObject>> {
        let mut req = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(&obj.key));
        if !obj.version_id.is_empty() {
            req = req.version_id(&obj.version_id);
        }
        self.requests.head.fetch_add(1, Ordering::Relaxed);
        match self.handle.block_on(req.send()) {
            Ok(h) => Ok(Some(SourceObject {
                size: h
                    .content_length()
                    .and_then(|l| u64::try_from(l).ok())
                    .unwrap_or(0),
                mtime_ns: ns(h.last_modified()),
                etag: h.e_tag().unwrap_or_default().to_string(),
                version_id: h.version_id().unwrap_or_default().to_string(),
                ..obj.clone()
            })),
            Err(e) => {
                let e = map_err(e, &obj.key);
                if e.kind() == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Writes one object to a bucket with the metadata its entry recorded.
pub async fn put_with_metadata(
    client: &Client,
    bucket: &str,
    key: &str,
    meta: &crate::manifest::ObjectMeta,
    body: Vec<u8>,
    overwrite: bool,
) -> Result<()> {
    let md5 = {
        use md5::Digest;
        aws_smithy_types::base64::encode(md5::Md5::digest(&body))
    };
    let mut req = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_md5(md5)
        .body(aws_sdk_s3::primitives::ByteStream::from(body));
    if !overwrite {
        req = req.if_none_match("*");
    }
    for (k, v) in &meta.system {
        req = match k.as_str() {
            "content-type" => req.content_type(v),
            "content-encoding" => req.content_encoding(v),
            "cache-control" => req.cache_control(v),
            "content-disposition" => req.content_disposition(v),
            "content-language" => req.content_language(v),
            "storage-class" => req.storage_class(v.as_str().into()),
            _ => req,
        };
    }
    for (k, v) in &meta.user {
        req = req.metadata(k, v);
    }
    if !meta.tags.is_empty() {
        let tagging: Vec<String> = meta
            .tags
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect();
        req = req.tagging(tagging.join("&"));
    }
    req.send().await.map_err(|e| {
        let e = map_err(e, key);
        if e.kind() == ErrorKind::AlreadyExists {
            Error::new(
                ErrorKind::AlreadyExists,
                format!("{key} exists in the target bucket (use --overwrite)"),
            )
        } else {
            e
        }
    })?;
    Ok(())
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
