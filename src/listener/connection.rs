//! One client connection: hyper serves it while a watchdog closes it when the client is too
//! slow to send a request head, or stays idle between requests for too long.
//!
//! hyper's own `header_read_timeout` cannot tell the two apart: its timer starts when the
//! connection becomes ready for a request (at accept and after each response), so an idle
//! keep-alive and a slow head share one limit. Here the phase is tracked instead: reads on the
//! socket mark the start of a head, the service marks its end, the end of the response body
//! marks the start of idleness.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body as AxumBody, Bytes};
use axum::http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::Limits;
use super::body::DeadlineBody;

/// Serves one connection until it ends, a timeout closes it, or shutdown lets it finish.
/// `_slot` is its place under the connection cap, given back when this returns.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Watched { inner: stream, watch: watch.clone() });
    let service = {
        let watch = watch.clone();
        let body_read = limits.body_read;
        hyper::service::service_fn(move |request| handle(app.clone(), request, peer, watch.clone(), body_read))
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // The watchdog below keeps time; hyper's timer would conflate heads with idleness.
    http.header_read_timeout(None);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let (phase, since) = watch.get();
        let limit = match phase {
            Phase::Head => limits.header_read,
            Phase::Idle => limits.idle,
            Phase::Busy => None,
        };
        let deadline = limit.map(|limit| since + limit);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // The phase changed: work the deadline out again.
            _ = watch.changed.notified() => {}
            _ = sleep_until(deadline) => {
                tracing::debug!(?phase, "closing a connection that sent nothing in time");
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                // Finishes the request in hand, if any, then closes.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs one request through the router: its body gets a deadline, and the connection is busy
/// until the response body has been sent (or dropped).
async fn handle(
    app: Router,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    watch: Arc<Watch>,
    body_read: Option<Duration>,
) -> Result<Response<Tracked>, Infallible> {
    watch.set(Phase::Busy);
    let busy = BusyGuard(watch);
    // Who is calling, for limits keyed by address (the console's sign-in).
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    let expired = Arc::new(AtomicBool::new(false));
    let request = match body_read {
        Some(limit) => {
            let deadline = Instant::now() + limit;
            request.map(|body| AxumBody::new(DeadlineBody::new(body, deadline, expired.clone())))
        }
        None => request.map(AxumBody::new),
    };
    let mut response = app.oneshot(request).await?;
    if expired.load(Ordering::Relaxed) {
        // The rest of a late body would only be read to be thrown away.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response.map(|inner| Tracked { inner, _busy: busy }))
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head; also a new connection's first phase.
    Head = 0,
    /// A request is being handled or its response sent.
    Busy = 1,
    /// Kept alive, no byte of a next request yet.
    Idle = 2,
}

/// A connection's phase and when it began, shared by the socket, the service and the watchdog.
struct Watch {
    epoch: Instant,
    /// Milliseconds since `epoch` shifted left by two, or'ed with the [`Phase`]: one atomic, so
    /// phase and time are always read together.
    state: AtomicU64,
    /// Wakes the watchdog on a change of phase (one waiter, so a change is never missed).
    changed: Notify,
}

impl Watch {
    fn new() -> Self {
        Self { epoch: Instant::now(), state: AtomicU64::new(Phase::Head as u64), changed: Notify::new() }
    }

    fn get(&self) -> (Phase, Instant) {
        let state = self.state.load(Ordering::Acquire);
        let phase = match state & 3 {
            0 => Phase::Head,
            1 => Phase::Busy,
            _ => Phase::Idle,
        };
        (phase, self.epoch + Duration::from_millis(state >> 2))
    }

    fn phase(&self) -> Phase {
        self.get().0
    }

    fn set(&self, phase: Phase) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.state.store((ms << 2) | phase as u64, Ordering::Release);
        self.changed.notify_one();
    }
}

/// Ends the busy phase when the response is done with.
struct BusyGuard(Arc<Watch>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(Phase::Idle);
    }
}

/// A response body that keeps its connection busy until it is dropped.
struct Tracked {
    inner: AxumBody,
    _busy: BusyGuard,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting the first bytes of a request that arrive on an idle connection.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before && self.watch.phase() == Phase::Idle {
            self.watch.set(Phase::Head);
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
