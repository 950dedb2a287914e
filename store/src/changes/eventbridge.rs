//! S3 event notifications in Amazon EventBridge's format.
//!
//! A batch is what a delivery stream writes: JSON events one after another
//! (newline-separated or not), or JSON arrays of them. Used detail types:
//! "Object Created" and the metadata changes that alter what a restore
//! writes ("Object Tags Added", "Object Tags Deleted", "Object ACL
//! Updated", "Object Storage Class Changed") mean *re-read the key*;
//! "Object Deleted" means *check the key is gone*. Other types (restores,
//! access tiers) and other event sources are skipped. A malformed record
//! is skipped up to the next line and counted, never fatal: the feed must
//! not stop on one bad byte, and listing reconciliation catches a lost
//! event.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use serde::Deserialize;

use super::{ChangeEvent, ChangeKind};

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    time: String,
    detail: Option<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    size: Option<u64>,
    #[serde(default)]
    etag: String,
    #[serde(rename = "version-id", default)]
    version_id: String,
    #[serde(default)]
    sequencer: String,
}

/// What one batch held.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events that name a change.
    pub events: Vec<ChangeEvent>,
    /// Records that are events of other kinds or sources.
    pub skipped: u64,
    /// Records that are not valid events (skipped).
    pub malformed: u64,
}

/// Parses one event (a JSON object).
pub fn parse_event(value: serde_json::Value) -> Result<Option<ChangeEvent>, String> {
    let env: Envelope = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if env.source != "aws.s3" {
        return Ok(None);
    }
    let kind = match env.detail_type.as_str() {
        "Object Created"
        | "Object Tags Added"
        | "Object Tags Deleted"
        | "Object ACL Updated"
        | "Object Storage Class Changed" => ChangeKind::Created,
        "Object Deleted" => ChangeKind::Deleted,
        _ => return Ok(None),
    };
    let detail = env.detail.ok_or("event without detail")?;
    if detail.object.key.is_empty() {
        return Err("event with an empty key".into());
    }
    let time_ns = if env.time.is_empty() {
        0
    } else {
        let t = humantime::parse_rfc3339_weak(env.time.trim_end_matches('Z'))
            .map_err(|e| format!("time {:?}: {e}", env.time))?;
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .unwrap_or(0)
    };
    Ok(Some(ChangeEvent {
        bucket: detail.bucket.name,
        key: detail.object.key,
        kind,
        size: detail.object.size,
        etag: detail.object.etag.trim_matches('"').to_string(),
        version_id: detail.object.version_id,
        sequencer: detail.object.sequencer,
        time_ns,
    }))
}

/// Parses a batch of events.
pub fn parse_batch(bytes: &[u8]) -> Batch {
    let mut batch = Batch::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut stream =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
        match stream.next() {
            None => break,
            Some(Ok(value)) => {
                let used = stream.byte_offset();
                rest = rest.get(used..).unwrap_or_default();
                let records = match value {
                    serde_json::Value::Array(items) => items,
                    other => vec![other],
                };
                for r in records {
                    match parse_event(r) {
                        Ok(Some(e)) => batch.events.push(e),
                        Ok(None) => batch.skipped += 1,
                        Err(why) => {
                            tracing::warn!(%why, "skipping a malformed change event");
                            batch.malformed += 1;
                        }
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "skipping malformed JSON in a change batch");
                batch.malformed += 1;
                // Resynchronise at the next line after the error.
                let at = stream.byte_offset().max(1);
                let skip = rest
                    .get(at..)
                    .and_then(|r| r.iter().position(|&b| b == b'\n'))
                    .map_or(rest.len(), |p| at + p + 1);
                rest = rest.get(skip..).unwrap_or_default();
            }
        }
    }
    batch
}

/// Writes `event` in EventBridge's format (for tests, simulations and
/// tools that replay changes).
pub fn to_json(event: &ChangeEvent) -> serde_json::Value {
    let time = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(u64::try_from(event.time_ns).unwrap_or(0)),
    )
    .to_string();
    let mut object = serde_json::Map::new();
    object.insert("key".into(), event.key.clone().into());
    object.insert("sequencer".into(), event.sequencer.clone().into());
    if !event.version_id.is_empty() {
        object.insert("version-id".into(), event.version_id.clone().into());
    }
    let (detail_type, reason) = match event.kind {
        ChangeKind::Created => {
            object.insert("size".into(), event.size.unwrap_or(0).into());
            object.insert("etag".into(), event.etag.clone().into());
            ("Object Created", "PutObject")
        }
        ChangeKind::Deleted => ("Object Deleted", "DeleteObject"),
    };
    let mut detail = serde_json::Map::new();
    detail.insert("version".into(), "0".into());
    detail.insert("bucket".into(), serde_json::json!({ "name": event.bucket }));
    detail.insert("object".into(), object.into());
    detail.insert("request-id".into(), "0".into());
    detail.insert("requester".into(), "0".into());
    detail.insert("reason".into(), reason.into());
    if event.kind == ChangeKind::Deleted {
        let how = if event.version_id.is_empty() {
            "Permanently Deleted"
        } else {
            "Delete Marker Created"
        };
        detail.insert("deletion-type".into(), how.into());
    }
    serde_json::json!({
        "version": "0",
        "id": format!("{}-{}", event.sequencer, event.key.len()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "000000000000",
        "time": time,
        "region": "us-east-1",
        "resources": [format!("arn:aws:s3:::{}", event.bucket)],
        "detail": detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: &str = r#"{"version":"0","id":"17793124-05d4-b198-2fde-7ededc63b103","detail-type":"Object Created","source":"aws.s3","account":"111122223333","time":"2021-11-12T00:00:00Z","region":"ca-central-1","resources":["arn:aws:s3:::bucket1"],"detail":{"version":"0","bucket":{"name":"bucket1"},"object":{"key":"tenant/7/a b.txt","size":5,"etag":"b1946ac92492d2347c6235b4d2611184","version-id":"IYV3p45BT0ac8hjHg1houSdS1a.Mro8e","sequencer":"00617F08299329D189"},"request-id":"N4N7GDK58NMKJ12R","requester":"123456789012","source-ip-address":"1.2.3.4","reason":"PutObject"}}"#;
    const DELETED: &str = r#"{"version":"0","id":"2ee9cc15-d022-99ea-1fb8-1b1bac4850f9","detail-type":"Object Deleted","source":"aws.s3","account":"111122223333","time":"2021-11-12T00:00:01Z","region":"ca-central-1","resources":["arn:aws:s3:::bucket1"],"detail":{"version":"0","bucket":{"name":"bucket1"},"object":{"key":"tenant/7/a b.txt","version-id":"1QW9g1Z99LUNbvaaYVpW9xDlOLU.qxgF","sequencer":"00617F0A8CC7C2E0F3"},"request-id":"0BH729840619AG5K","requester":"123456789012","source-ip-address":"1.2.3.4","reason":"DeleteObject","deletion-type":"Delete Marker Created"}}"#;

    #[test]
    fn parses_created_and_deleted() {
        let b = parse_batch(format!("{CREATED}\n{DELETED}\n").as_bytes());
        assert_eq!(b.malformed, 0);
        assert_eq!(b.events.len(), 2);
        let c = &b.events[0];
        assert_eq!(c.kind, ChangeKind::Created);
        assert_eq!(c.key, "tenant/7/a b.txt");
        assert_eq!(c.size, Some(5));
        assert_eq!(c.sequencer, "00617F08299329D189");
        assert_eq!(c.time_ns, 1_636_675_200_000_000_000);
        assert_eq!(b.events[1].kind, ChangeKind::Deleted);
    }

    #[test]
    fn concatenated_arrays_and_garbage_lines() {
        let text = format!("[{CREATED},{DELETED}]{CREATED}\n{{not json\n{DELETED}");
        let b = parse_batch(text.as_bytes());
        assert_eq!(b.events.len(), 4);
        assert_eq!(b.malformed, 1);
    }

    #[test]
    fn other_sources_and_types_are_skipped() {
        let other = CREATED.replace("Object Created", "Object Restore Completed");
        let b = parse_batch(format!("{other}{}", CREATED.replace("aws.s3", "my.app")).as_bytes());
        assert!(b.events.is_empty());
        assert_eq!(b.skipped, 2);
    }

    #[test]
    fn written_events_parse_back() {
        for e in parse_batch(format!("{CREATED}{DELETED}").as_bytes()).events {
            let again = parse_event(to_json(&e)).unwrap().unwrap();
            assert_eq!(again, e);
        }
    }
}
