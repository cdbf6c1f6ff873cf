//! The load generator: C keep-alive HTTP/1.1 connections (hyper 1), one per virtual
//! user, each sending its requests back to back for a fixed time, on the driver's
//! one-thread runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;

/// The body of a request.
#[derive(Debug, Clone, Default)]
pub(crate) enum BodySpec {
    /// No body (what S1–S3 send).
    #[default]
    Empty,
    /// A mobile `$authenticate` body with a `device.id` never sent before (M1).
    NewDevice,
}

/// Device ids of [`BodySpec::NewDevice`]: unique in the driver process.
static DEVICE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A mobile login body (the shape of the iOS client's) for device `device_id`.
pub(crate) fn mobile_login_body(device_id: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"email":"","application":{{"id":"com.example.app","name":"App"}},"team":{{"id":"TEAM123456"}},"device":{{"id":"{device_id}","description":"iPhone","os":"iOS"}}}}"#
    ))
}

impl BodySpec {
    fn bytes(&self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::NewDevice => {
                let n = DEVICE_SEQ.fetch_add(1, Ordering::Relaxed);
                mobile_login_body(&format!("BENCH-{:08X}-{n:012X}", std::process::id()))
            }
        }
    }
}

/// What makes a 2xx answer count as a success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Check {
    /// Any 2xx.
    #[default]
    Status,
    /// 200 with a JSON body holding a non-empty `token` and `success: true` (M1).
    MobileToken,
}

impl Check {
    fn accepts(self, status: u16, body: &[u8]) -> bool {
        match self {
            Self::Status => (200..300).contains(&status),
            Self::MobileToken => {
                status == 200
                    && serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
                        v["success"] == true && v["token"].as_str().is_some_and(|t| !t.is_empty())
                    })
            }
        }
    }
}

/// One request, as every virtual user sends it.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpec {
    /// GET or POST.
    pub method: Method,
    /// The path (`/read`…).
    pub path: &'static str,
    /// The `Cookie` header (`name=value`), if any.
    pub cookie: Option<String>,
    /// When not empty, instead of `cookie`: connection `i` of `C` sends its requests
    /// with cookies `i`, `i + C`, `i + 2C`… (round robin over many sessions).
    pub cookies: Arc<[String]>,
    /// Other headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: BodySpec,
    /// What counts as a success.
    pub check: Check,
}

impl Default for RequestSpec {
    fn default() -> Self {
        Self {
            method: Method::GET,
            path: "/",
            cookie: None,
            cookies: Arc::from([]),
            headers: Vec::new(),
            body: BodySpec::Empty,
            check: Check::Status,
        }
    }
}

impl RequestSpec {
    /// `method path` with no cookie, header or body.
    pub(crate) fn new(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            ..Self::default()
        }
    }

    /// The request; `nth` picks the cookie from [`RequestSpec::cookies`].
    fn build(&self, nth: usize) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header(header::HOST, "127.0.0.1");
        let cookie = if self.cookies.is_empty() {
            self.cookie.as_ref()
        } else {
            Some(&self.cookies[nth % self.cookies.len()])
        };
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c.as_str());
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(self.body.bytes()))
            .expect("a valid request")
    }
}

/// What one timed run of C connections measured.
#[derive(Debug, Default)]
pub(crate) struct LoadResult {
    /// Successful responses (2xx, and passing the spec's [`Check`]).
    pub ok: u64,
    /// Responses with another status.
    pub non_2xx: u64,
    /// 2xx responses whose body failed the spec's [`Check`].
    pub invalid: u64,
    /// Failed connections or requests (no response).
    pub errors: u64,
    /// Per-response latency, µs, sorted.
    pub latencies_us: Vec<u32>,
    /// From the start signal until every connection finished its last request.
    pub elapsed: Duration,
}

impl LoadResult {
    /// The `q` quantile (0..=1) of the latencies, µs.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let n = self.latencies_us.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(self.latencies_us[rank - 1])
    }

    /// Responses of any status.
    pub fn responses(&self) -> u64 {
        self.ok + self.non_2xx + self.invalid
    }
}

/// Opens one HTTP/1.1 keep-alive connection to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A response read whole.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The status code.
    pub status: u16,
    /// The first `Set-Cookie`, reduced to `name=value`.
    pub cookie: Option<String>,
    /// The body as text.
    pub body: String,
}

/// One request on a fresh connection (setup and checks, not measured).
pub(crate) async fn fetch(addr: SocketAddr, spec: &RequestSpec) -> anyhow::Result<Fetched> {
    let mut sender = connect(addr).await?;
    sender.ready().await?;
    let resp = sender.send_request(spec.build(0)).await?;
    let status = resp.status().as_u16();
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Fetched {
        status,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What one connection (or one remote client) counted during a run.
#[derive(Default)]
pub(crate) struct ConnResult {
    /// Successful answers.
    pub ok: u64,
    /// Answers with another status (remote: protocol errors).
    pub non_2xx: u64,
    /// Successful answers failing the check.
    pub invalid: u64,
    /// Requests with no answer.
    pub errors: u64,
    /// Per-answer latency, µs, in order.
    pub latencies_us: Vec<u32>,
}

impl ConnResult {
    /// Room for a run's latencies.
    pub(crate) fn with_capacity() -> Self {
        Self {
            latencies_us: Vec::with_capacity(64 * 1024),
            ..Self::default()
        }
    }
}

impl LoadResult {
    /// Adds one connection's counts (sort [`LoadResult::latencies_us`] afterwards).
    pub(crate) fn absorb(&mut self, r: &ConnResult) {
        self.ok += r.ok;
        self.non_2xx += r.non_2xx;
        self.invalid += r.invalid;
        self.errors += r.errors;
        self.latencies_us.extend_from_slice(&r.latencies_us);
    }
}

/// Runs `conns` connections against `addr` for `duration`, each sending `spec` back
/// to back. Connections are opened before the clock starts. `on_start` runs right
/// before the clock starts and `on_end` right after the last connection finished
/// (the server CPU readings go there).
pub(crate) async fn run(
    addr: SocketAddr,
    spec: &RequestSpec,
    conns: usize,
    duration: Duration,
    mut on_start: impl FnMut(),
    mut on_end: impl FnMut(),
) -> anyhow::Result<LoadResult> {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(connect(addr).await?);
    }
    on_start();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(conns);
    for (i, sender) in senders.into_iter().enumerate() {
        let spec = spec.clone();
        tasks.push(tokio::spawn(conn_loop(
            addr,
            sender,
            spec,
            deadline,
            (i, conns),
        )));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        total.absorb(&t.await?);
    }
    total.elapsed = start.elapsed();
    on_end();
    total.latencies_us.sort_unstable();
    Ok(total)
}

async fn conn_loop(
    addr: SocketAddr,
    mut sender: SendRequest<Full<Bytes>>,
    spec: RequestSpec,
    deadline: Instant,
    (first, stride): (usize, usize),
) -> ConnResult {
    let mut r = ConnResult::with_capacity();
    let mut nth = first;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let answer = one(&mut sender, &spec, nth).await;
        nth += stride;
        if let Ok((status, body)) = answer {
            let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
            r.latencies_us.push(us);
            if !(200..300).contains(&status) {
                r.non_2xx += 1;
            } else if spec.check == Check::Status || spec.check.accepts(status, &body) {
                r.ok += 1;
            } else {
                r.invalid += 1;
            }
        } else {
            r.errors += 1;
            // The connection is gone: open another one (bounded by the deadline).
            match connect(addr).await {
                Ok(s) => sender = s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    r
}

async fn one(
    sender: &mut SendRequest<Full<Bytes>>,
    spec: &RequestSpec,
    nth: usize,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(spec.build(nth)).await?;
    let status = resp.status().as_u16();
    // Read the whole body so the connection is free for the next request.
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
