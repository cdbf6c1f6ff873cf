//! [`serve`]: the HTTP/1.1 server loop, with every resource a client can hold bounded
//! by a named setting ([`ConnectionLimits`]):
//!
//! - a new connection must send its first request head within
//!   [`ConnectionLimits::header_read_timeout`], and a later request head must be
//!   complete that long after its first byte (slow headers, "slowloris");
//! - a keep-alive connection waits at most [`ConnectionLimits::idle_timeout`] for its
//!   next request;
//! - a request body must arrive within [`ConnectionLimits::body_timeout`];
//! - at most [`ConnectionLimits::max_connections`] connections (never more than the
//!   open-files limit allows) and [`ConnectionLimits::max_connections_per_address`]
//!   from one address. At a cap, a new connection takes the place of the one that has
//!   been idle the longest (half-open connections are idle), so connections that hold
//!   a slot without sending a request can never shut out a client that does; when
//!   every connection is busy, the new one is closed;
//! - shutdown stops accepting, closes idle and half-open connections at once, lets
//!   requests in flight finish within [`ConnectionLimits::shutdown_grace`], then closes
//!   what is left.
//!
//! WebSocket connections (`/remote`) leave this accounting once upgraded; their own
//! protocol bounds them (hello and ping timeouts).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// Bounds on what one client can hold. Defaults: 10 s to send a request head, 60 s
/// idle between requests, 30 s for a request body, 4096 connections (fewer when the
/// open-files limit is lower), 256 per client address, 10 s of grace at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to send a whole request head (from the connection's start for the first
    /// request, from the head's first byte for the next ones).
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time to send a whole request body.
    pub body_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_address: usize,
    /// At shutdown, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_address: 256,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Open files kept for everything but connections (store, files, Redis, logs).
const RESERVED_FILES: u64 = 128;

/// The connection cap this process can honour: [`ConnectionLimits::max_connections`],
/// lowered to fit in the open-files soft limit.
fn connection_cap(wanted: usize) -> usize {
    #[cfg(unix)]
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        let room =
            usize::try_from(soft.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
        return wanted.min(room);
    }
    wanted
}

/// Raises this process's open-files soft limit to its hard limit (binaries call it at
/// start); returns the soft limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What one connection is doing, shared by its reader, its requests and its
/// supervisor. A plain mutex: held for a few assignments, never across an `.await`.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Requests whose response is not finished.
    in_flight: u32,
    /// Whether a request was ever received.
    served: bool,
    /// When the connection last became idle.
    idle_since: Instant,
    /// First byte of the next request head, while idle.
    head_started: Option<Instant>,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            opened: now,
            in_flight: 0,
            served: false,
            idle_since: now,
            head_started: None,
        }
    }

    /// When the connection must be closed if nothing changes; `None` while busy.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight > 0 {
            None
        } else if !self.served {
            Some(self.opened + limits.header_read_timeout)
        } else if let Some(t) = self.head_started {
            Some(t + limits.header_read_timeout)
        } else {
            Some(self.idle_since + limits.idle_timeout)
        }
    }

    /// Idle (no request in flight) since when, for the eviction order.
    fn idle(&self) -> Option<Instant> {
        (self.in_flight == 0).then_some(self.idle_since)
    }
}

type Shared = Arc<Mutex<Activity>>;

struct Entry {
    ip: IpAddr,
    activity: Shared,
    close: Arc<Notify>,
}

/// The open connections. A plain mutex: held for map updates and, at a cap, one scan
/// of the entries; never across an `.await`. Lock order: this, then an `Activity`.
#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

impl Table {
    /// The connection (of `ip`, if given) idle the longest.
    fn oldest_idle(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip))
            .filter_map(|(id, e)| e.activity.lock().idle().map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&e.ip);
            }
        }
        Some(e)
    }

    /// Makes room for a connection from `ip` within the caps, closing the longest idle
    /// connection when needed; false when every candidate is busy.
    fn make_room(&mut self, ip: IpAddr, cap: usize, per_address: usize) -> bool {
        for scope in [Some(ip), None] {
            let full = match scope {
                Some(ip) => self.per_address.get(&ip).copied().unwrap_or(0) >= per_address,
                None => self.entries.len() >= cap,
            };
            if full {
                let Some(victim) = self.oldest_idle(scope) else {
                    return false;
                };
                if let Some(e) = self.remove(victim) {
                    e.close.notify_one();
                }
            }
        }
        true
    }
}

/// Serves `router` on `listener` until `shutdown` completes, within `limits` (see
/// the module documentation). Requests carry [`ConnectInfo<SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let cap = connection_cap(limits.max_connections);
    let table = Arc::new(Mutex::new(Table::default()));
    let next = AtomicU64::new(0);
    let (stopping, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept:
                    // wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let activity: Shared = Arc::new(Mutex::new(Activity::new(Instant::now())));
        let close = Arc::new(Notify::new());
        {
            let mut t = table.lock();
            if !t.make_room(peer.ip(), cap, limits.max_connections_per_address) {
                drop(t);
                tracing::debug!(client = %peer.ip(), "connection refused: every connection is busy");
                continue;
            }
            t.entries.insert(
                id,
                Entry {
                    ip: peer.ip(),
                    activity: activity.clone(),
                    close: close.clone(),
                },
            );
            *t.per_address.entry(peer.ip()).or_default() += 1;
        }
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            router: router.clone(),
            limits: limits.clone(),
            peer,
            activity,
            close,
            stop: stop.clone(),
        };
        let table = table.clone();
        tokio::spawn(async move {
            conn.run(stream).await;
            table.lock().remove(id);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Requests in flight finish within the grace period; then what is left closes.
    let deadline = Instant::now() + limits.shutdown_grace;
    while !table.lock().entries.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left: Vec<u64> = table.lock().entries.keys().copied().collect();
    if !left.is_empty() {
        tracing::warn!(
            connections = left.len(),
            "closing connections still open after the shutdown grace period"
        );
    }
    for id in left {
        if let Some(e) = table.lock().remove(id) {
            e.close.notify_one();
        }
    }
    Ok(())
}

struct Connection {
    router: Router,
    limits: Arc<ConnectionLimits>,
    peer: SocketAddr,
    activity: Shared,
    close: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: self.activity.clone(),
        });
        let (router, peer, activity, limits) = (
            self.router.clone(),
            self.peer,
            self.activity.clone(),
            self.limits.clone(),
        );
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = RequestGuard::start(&activity);
            let body_timeout = limits.body_timeout;
            let mut req = req.map(|b| Body::new(Deadline::new(b, body_timeout)));
            req.extensions_mut().insert(ConnectInfo(peer));
            let call = router.clone().oneshot(req);
            async move {
                let response = call.await?;
                Ok::<_, Infallible>(response.map(|b| {
                    Body::new(Guarded {
                        inner: b,
                        _guard: guard,
                    })
                }))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        let mut stopping = *self.stop.borrow();
        loop {
            if stopping && self.activity.lock().in_flight == 0 {
                return; // idle or half-open at shutdown: closed now
            }
            let deadline = self.activity.lock().deadline(&self.limits);
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    // Busy: look again a little later.
                    None => tokio::time::sleep(self.limits.header_read_timeout).await,
                }
            };
            tokio::select! {
                _ = conn.as_mut() => return,
                () = self.close.notified() => return,
                () = wait => {
                    let expired = self
                        .activity
                        .lock()
                        .deadline(&self.limits)
                        .is_some_and(|d| d <= Instant::now());
                    if expired {
                        return; // slow head or idle too long: dropping closes it
                    }
                }
                changed = self.stop.changed(), if !stopping => {
                    stopping = changed.is_err() || *self.stop.borrow();
                    if stopping {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Marks a request in flight until its response body is finished (or dropped).
struct RequestGuard(Shared);

impl RequestGuard {
    fn start(activity: &Shared) -> Self {
        let mut a = activity.lock();
        a.in_flight += 1;
        a.served = true;
        a.head_started = None;
        drop(a);
        Self(activity.clone())
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut a = self.0.lock();
        a.in_flight -= 1;
        a.idle_since = Instant::now();
    }
}

/// A response body that keeps its request counted until it is done.
struct Guarded {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once its time is up.
struct Deadline {
    inner: Incoming,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

/// The request body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
struct BodyTimeout;

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when the next request head starts to arrive.
struct Tracked {
    inner: TcpStream,
    activity: Shared,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut a = self.activity.lock();
            if a.in_flight == 0 && a.head_started.is_none() {
                a.head_started = Some(Instant::now());
            }
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_connection_state() {
        let limits = ConnectionLimits::default();
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        assert_eq!(a.deadline(&limits), Some(t0 + limits.header_read_timeout));
        a.in_flight = 1;
        a.served = true;
        assert_eq!(a.deadline(&limits), None);
        a.in_flight = 0;
        a.idle_since = t0 + Duration::from_secs(1);
        assert_eq!(
            a.deadline(&limits),
            Some(t0 + Duration::from_secs(1) + limits.idle_timeout)
        );
        a.head_started = Some(t0 + Duration::from_secs(2));
        assert_eq!(
            a.deadline(&limits),
            Some(t0 + Duration::from_secs(2) + limits.header_read_timeout)
        );
    }
}
