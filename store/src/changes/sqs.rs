//! A feed from an SQS queue that EventBridge delivers S3 events to (a rule
//! on source `aws.s3` with the queue as target): each message body is one
//! event, or a JSON array of them.
//!
//! A read receives until the queue answers empty (or the per-cycle cap),
//! keeping the messages invisible for `visibility_timeout`; they are
//! deleted only in [`ChangeFeed::committed`], after the point holding
//! them is committed. A crash before that lets them reappear, to be read
//! again — harmless, since events only name keys to re-read. A queue has
//! no position: the checkpoint records an empty one.

use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use aws_sdk_sqs::Client;

use super::eventbridge::parse_batch;
use super::files::MAX_EVENTS_PER_READ;
use super::{ChangeEvent, ChangeFeed, FeedPosition};
use crate::backend::s3::map_err;
use crate::error::{Error, ErrorKind, Result};

/// How long received messages stay invisible to other readers (default).
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(3600);

/// Events from an SQS queue.
pub struct SqsFeed {
    client: Client,
    queue_url: String,
    visibility: Duration,
    max_events: usize,
    /// Receipt handles of messages read and not yet deleted.
    receipts: Mutex<Vec<String>>,
}

impl SqsFeed {
    /// A feed from `queue_url` (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`,
    /// or an SQS-compatible server's queue URL, whose host is then used as
    /// the endpoint unless `endpoint_url` is given).
    pub async fn connect(queue_url: &str, endpoint_url: Option<&str>) -> Result<Self> {
        let (scheme, rest) = queue_url
            .split_once("://")
            .ok_or_else(|| Error::config(format!("not a queue URL: {queue_url}")))?;
        let host = rest.split('/').next().unwrap_or_default();
        let endpoint = match endpoint_url {
            Some(e) => Some(e.to_string()),
            None if host.ends_with(".amazonaws.com") => None,
            None => Some(format!("{scheme}://{host}")),
        };
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(e) = &endpoint {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_sqs::config::Builder::from(&shared)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(6));
        if shared.region().is_none() {
            let region = host.split('.').nth(1).filter(|_| host.starts_with("sqs."));
            b = b.region(aws_sdk_sqs::config::Region::new(
                region.unwrap_or("us-east-1").to_string(),
            ));
        }
        Ok(SqsFeed {
            client: Client::from_conf(b.build()),
            queue_url: queue_url.to_string(),
            visibility: DEFAULT_VISIBILITY,
            max_events: MAX_EVENTS_PER_READ,
            receipts: Mutex::default(),
        })
    }

    /// Sets how long read messages stay invisible (longer than a cycle).
    pub fn with_visibility(mut self, d: Duration) -> Self {
        self.visibility = d;
        self
    }

    /// Caps the events one read returns.
    pub fn with_max_events(mut self, n: usize) -> Self {
        self.max_events = n.max(1);
        self
    }
}

#[async_trait::async_trait]
impl ChangeFeed for SqsFeed {
    fn describe(&self) -> String {
        self.queue_url.clone()
    }

    async fn read(&self, _position: Option<&str>) -> Result<(Vec<ChangeEvent>, FeedPosition)> {
        let mut events = Vec::new();
        let mut receipts = Vec::new();
        let mut malformed = 0;
        let visibility = i32::try_from(self.visibility.as_secs()).unwrap_or(43_200);
        while events.len() < self.max_events {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(visibility)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|e| map_err(e, "receiving from the change queue"))?;
            let messages = out.messages();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let batch = parse_batch(m.body().unwrap_or_default().as_bytes());
                malformed += batch.malformed;
                events.extend(batch.events);
                if let Some(r) = m.receipt_handle() {
                    receipts.push(r.to_string());
                }
            }
        }
        if malformed > 0 {
            tracing::warn!(malformed, "malformed messages in the change queue skipped");
        }
        self.receipts
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "receipt lock poisoned"))?
            .extend(receipts);
        Ok((events, String::new()))
    }

    async fn committed(&self, _position: &str) -> Result<()> {
        let receipts = std::mem::take(
            &mut *self
                .receipts
                .lock()
                .map_err(|_| Error::new(ErrorKind::Io, "receipt lock poisoned"))?,
        );
        for (n, chunk) in receipts.chunks(10).enumerate() {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{n}-{i}"))
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| map_err(e, "acknowledging the change queue"))?;
            if !out.failed().is_empty() {
                // They reappear after the visibility timeout and are read
                // again: extra work, no wrong state.
                tracing::warn!(
                    failed = out.failed().len(),
                    "some queue messages could not be deleted"
                );
            }
        }
        Ok(())
    }
}
