//! A throttling proxy in front of the local S3 server that plays S3's
//! per-prefix request limits: each configured partition prefix has a
//! token bucket (requests/s, a quarter second of burst); a request past
//! it gets S3's `503 SlowDown` answer instead of reaching the server.
//! Outcomes are counted per client (the SDK's `app/<name>` user-agent
//! token) and partition in 100 ms buckets, for tests and plots.
//!
//! Path-style requests only (`/bucket/key?query`): a request's key is its
//! path after the bucket, else its `prefix`, `start-after` or
//! `continuation-token`-less listing parameters.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Width of a counting bucket.
pub const BUCKET: Duration = Duration::from_millis(100);

/// How the proxy limits.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The S3 server, `host:port`.
    pub upstream: String,
    /// Partition prefixes (of the key, after the bucket) and their limits
    /// in requests/s. Keys under none are not limited.
    pub limits: Vec<(String, f64)>,
    /// Seconds of burst each bucket holds.
    pub burst_s: f64,
    /// Send `Retry-After: <s>` with each 503.
    pub retry_after: Option<u32>,
}

/// Per (client, partition): forwarded and refused requests per bucket.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Series {
    /// Requests forwarded, per bucket.
    pub ok: Vec<u32>,
    /// Requests refused with 503, per bucket.
    pub throttled: Vec<u32>,
}

impl Series {
    fn add(&mut self, bucket: usize, throttled: bool) {
        let v = if throttled {
            &mut self.throttled
        } else {
            &mut self.ok
        };
        if v.len() <= bucket {
            v.resize(bucket + 1, 0);
        }
        if let Some(x) = v.get_mut(bucket) {
            *x += 1;
        }
    }

    /// Forwarded plus refused in bucket `i`.
    pub fn attempts(&self, i: usize) -> u32 {
        self.ok.get(i).copied().unwrap_or(0) + self.throttled.get(i).copied().unwrap_or(0)
    }

    /// Total forwarded.
    pub fn total_ok(&self) -> u64 {
        self.ok.iter().map(|&n| u64::from(n)).sum()
    }

    /// Total refused.
    pub fn total_throttled(&self) -> u64 {
        self.throttled.iter().map(|&n| u64::from(n)).sum()
    }
}

struct Tokens {
    rate: f64,
    tokens: f64,
    at: Instant,
}

struct State {
    started: Instant,
    buckets: BTreeMap<String, Tokens>,
    series: BTreeMap<(String, String), Series>,
    /// GETs of each object key, per client (to count re-reads).
    gets: BTreeMap<(String, String), u32>,
}

/// A running proxy.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    cfg: ProxyConfig,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 (a free port).
    pub async fn start(cfg: ProxyConfig) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let now = Instant::now();
        let state = Arc::new(Mutex::new(State {
            started: now,
            buckets: cfg
                .limits
                .iter()
                .map(|(p, r)| {
                    (
                        p.clone(),
                        Tokens {
                            rate: *r,
                            tokens: (r * cfg.burst_s).max(1.0),
                            at: now,
                        },
                    )
                })
                .collect(),
            series: BTreeMap::new(),
            gets: BTreeMap::new(),
        }));
        let (st, c) = (state.clone(), cfg.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, c) = (st.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, st, c).await;
                });
            }
        });
        Ok(Proxy {
            addr,
            cfg,
            state,
            task,
        })
    }

    /// The endpoint URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Seconds since the proxy started.
    pub fn elapsed(&self) -> f64 {
        self.state.lock().unwrap().started.elapsed().as_secs_f64()
    }

    /// The counts so far, keyed by (client, partition).
    pub fn series(&self) -> BTreeMap<(String, String), Series> {
        self.state.lock().unwrap().series.clone()
    }

    /// GETs per object key by `client`.
    pub fn gets_by(&self, client: &str) -> BTreeMap<String, u32> {
        self.state
            .lock()
            .unwrap()
            .gets
            .iter()
            .filter(|((c, _), _)| c == client)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect()
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        let mut st = self.state.lock().unwrap();
        st.series.clear();
        st.gets.clear();
        st.started = Instant::now();
    }

    /// The configured limit of `partition`, requests/s.
    pub fn limit(&self, partition: &str) -> Option<f64> {
        self.cfg
            .limits
            .iter()
            .find(|(p, _)| p == partition)
            .map(|(_, r)| *r)
    }
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>, cfg: ProxyConfig) -> hyper::Result<()> {
    // One upstream connection per client connection, opened on demand.
    let upstream: Arc<
        tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>,
    > = Arc::default();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (state, cfg, upstream) = (state.clone(), cfg.clone(), upstream.clone());
        async move { Ok::<_, Infallible>(handle(req, &state, &cfg, &upstream).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

type Body = BoxBody<Bytes, hyper::Error>;

fn text(status: StatusCode, body: String, retry_after: Option<u32>) -> Response<Body> {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/xml");
    if let Some(s) = retry_after {
        r = r.header("retry-after", s.to_string());
    }
    r.body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    state: &Mutex<State>,
    cfg: &ProxyConfig,
    upstream: &tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>,
) -> Response<Body> {
    let client = client_of(&req);
    let key = key_of(req.uri());
    let partition = cfg
        .limits
        .iter()
        .filter(|(p, _)| key.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())
        .map(|(p, _)| p.clone());
    let allowed = {
        let mut st = state.lock().unwrap();
        let now = Instant::now();
        let bucket =
            usize::try_from(now.duration_since(st.started).as_millis() / BUCKET.as_millis())
                .unwrap_or(usize::MAX);
        let allowed = match partition.as_ref().and_then(|p| st.buckets.get_mut(p)) {
            Some(t) => {
                let dt = now.duration_since(t.at).as_secs_f64();
                t.at = now;
                t.tokens = (t.tokens + dt * t.rate).min((t.rate * cfg.burst_s).max(1.0));
                if t.tokens >= 1.0 {
                    t.tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            None => true,
        };
        let name = partition.clone().unwrap_or_else(|| "(unlimited)".into());
        st.series
            .entry((client.clone(), name))
            .or_default()
            .add(bucket, !allowed);
        let object_get = req.method() == hyper::Method::GET
            && path_has_key(req.uri())
            && !req.uri().query().unwrap_or("").contains("tagging");
        if allowed && object_get {
            *st.gets.entry((client.clone(), key.clone())).or_default() += 1;
        }
        allowed
    };
    if !allowed {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into(),
            cfg.retry_after,
        );
    }
    match forward(req, cfg, upstream).await {
        Ok(r) => r,
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("<Error><Code>ProxyError</Code><Message>{e}</Message></Error>"),
            None,
        ),
    }
}

async fn forward(
    req: Request<Incoming>,
    cfg: &ProxyConfig,
    upstream: &tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let mut guard = upstream.lock().await;
    let usable = guard.as_ref().is_some_and(|s| !s.is_closed());
    if !usable {
        let stream = TcpStream::connect(&cfg.upstream).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *guard = Some(sender);
    }
    let sender = guard.as_mut().ok_or("no upstream")?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    Ok(resp.map(BodyExt::boxed))
}

/// The client's name: the SDK's `app/<name>` user-agent token.
fn client_of(req: &Request<Incoming>) -> String {
    for h in ["x-amz-user-agent", "user-agent"] {
        if let Some(v) = req.headers().get(h).and_then(|v| v.to_str().ok()) {
            if let Some(name) = v.split_whitespace().find_map(|t| t.strip_prefix("app/")) {
                return name.to_string();
            }
        }
    }
    "unknown".into()
}

fn path_has_key(uri: &hyper::Uri) -> bool {
    uri.path()
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, k)| !k.is_empty())
}

/// The key a request is about (path-style): the path after the bucket,
/// else the listing's prefix or start-after.
fn key_of(uri: &hyper::Uri) -> String {
    let path = uri.path().trim_start_matches('/');
    if let Some((_, key)) = path.split_once('/') {
        if !key.is_empty() {
            return decode(key);
        }
    }
    let params: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    for name in ["prefix", "start-after", "key-marker"] {
        if let Some((_, v)) = params.iter().find(|(k, v)| k == name && !v.is_empty()) {
            return v.clone();
        }
    }
    String::new()
}

fn decode(s: &str) -> String {
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
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The bucket's own application: steady GET/PUT traffic on some prefixes
/// through the proxy under its own client name.
pub struct LoadGen {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, u64)>>,
}

impl LoadGen {
    /// Starts `rate` requests/s on each of `prefixes` (80% GETs of its
    /// keys `<prefix>app/<i>`, 20% overwrites), with `client` (made with
    /// app name set and retries off). The keys must exist.
    pub fn start(
        client: aws_sdk_s3::Client,
        bucket: &str,
        prefixes: &[String],
        rate: f64,
        keys: usize,
    ) -> LoadGen {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = prefixes
            .iter()
            .map(|p| {
                let (client, bucket, prefix, rx) =
                    (client.clone(), bucket.to_string(), p.clone(), rx.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let (mut ok, mut throttled) = (0u64, 0u64);
                    let mut inflight = tokio::task::JoinSet::new();
                    let mut n = 0usize;
                    while !*rx.borrow() {
                        tick.tick().await;
                        n += 1;
                        let key = format!("{prefix}app/{}", n % keys.max(1));
                        let c = client.clone();
                        let b = bucket.clone();
                        inflight.spawn(async move {
                            let r = if n.is_multiple_of(5) {
                                c.put_object()
                                    .bucket(&b)
                                    .key(&key)
                                    .body(vec![b'x'; 512].into())
                                    .send()
                                    .await
                                    .map(|_| ())
                                    .map_err(|e| e.raw_response().map(|r| r.status().as_u16()))
                            } else {
                                match c.get_object().bucket(&b).key(&key).send().await {
                                    Ok(o) => {
                                        let _ = o.body.collect().await;
                                        Ok(())
                                    }
                                    Err(e) => Err(e.raw_response().map(|r| r.status().as_u16())),
                                }
                            };
                            matches!(r, Err(Some(503)))
                        });
                        while let Some(Ok(t)) = inflight.try_join_next() {
                            if t {
                                throttled += 1;
                            } else {
                                ok += 1;
                            }
                        }
                    }
                    while let Some(Ok(t)) = inflight.join_next().await {
                        if t {
                            throttled += 1;
                        } else {
                            ok += 1;
                        }
                    }
                    (ok, throttled)
                })
            })
            .collect();
        LoadGen { stop, tasks }
    }

    /// Stops and returns (answered, throttled) requests.
    pub async fn stop(self) -> (u64, u64) {
        let _ = self.stop.send(true);
        let mut total = (0, 0);
        for t in self.tasks {
            if let Ok((a, b)) = t.await {
                total.0 += a;
                total.1 += b;
            }
        }
        total
    }
}
