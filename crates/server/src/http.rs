//! The operations port: `GET /healthz` (200 `ok` while the server runs) and
//! `GET /metrics` (Prometheus text format).
//!
//! The port is meant for a scraper and a load balancer's health check, so it
//! holds little: a request's head must arrive within a few seconds (which
//! also ends a kept-alive connection that sends nothing more), a connection
//! with no traffic either way is closed, and only so many are open at once.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::guard::Throttle;
use crate::metrics::Metrics;

/// What one connection to the operations port may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request's head (request line and headers) must arrive within this,
    /// counted from when the server starts waiting for it: a new
    /// connection, or a kept-alive one after its last answer.
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown`, with the
/// default [`Limits`].
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    serve_with(listener, metrics, shutdown, Limits::default()).await
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown`.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, ?limits, "serving /healthz and /metrics");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut accept_failures = Throttle::default();
    let mut refusals = Throttle::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    if let Some(skipped) = accept_failures.hit(Instant::now()) {
                        warn!(error = %e, failures_since_last_report = skipped, "metrics accept failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refused("metrics_port_full");
            if let Some(skipped) = refusals.hit(Instant::now()) {
                warn!(%peer, cap = limits.max_connections, refused_since_last_report = skipped, "metrics port: too many connections; closing new ones at once");
            }
            let _ = stream.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 21\r\n\r\ntoo many connections\n",
            );
            continue;
        };
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let last = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let io = Watched {
                inner: stream,
                last: last.clone(),
                start,
            };
            let service = service_fn(move |req| respond(req, metrics.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            loop {
                let idle_until = start
                    + Duration::from_millis(last.load(Ordering::Relaxed))
                    + limits.idle_timeout;
                tokio::select! {
                    done = &mut conn => {
                        if let Err(e) = done {
                            debug!(%peer, error = %e, "metrics connection");
                        }
                        return;
                    }
                    _ = tokio::time::sleep_until(idle_until) => {
                        let last_ms = last.load(Ordering::Relaxed);
                        if start + Duration::from_millis(last_ms) + limits.idle_timeout <= Instant::now() {
                            debug!(%peer, "metrics connection idle: closing it");
                            return;
                        }
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// A socket that notes when bytes last moved either way.
struct Watched<S> {
    inner: S,
    /// Milliseconds from `start` to the last read or write.
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<S> Watched<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn respond(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /healthz or /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(response)
}
