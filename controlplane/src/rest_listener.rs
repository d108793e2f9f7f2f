//! The REST listener: our own accept loop in front of the axum router, so
//! that idle and slow clients cannot hold the process's file descriptors.
//!
//! - a client must send a request's headers within `httpd.read_header_timeout`
//!   (hyper's header timer, which also runs while a kept-alive connection
//!   waits for its next request);
//! - a kept-alive connection with no request in progress and no bytes either
//!   way for `httpd.idle_timeout` is closed;
//! - at most `httpd.max_connections_per_host` connections per client address
//!   and `httpd.max_connections` in all; one more gets a 429/503 JSON reply
//!   and is closed at once;
//! - one file descriptor is kept in reserve: when `accept` fails for lack of
//!   descriptors, the reserve is released, the pending connection accepted
//!   and closed (the client learns at once instead of hanging in the
//!   backlog), and the reserve taken again.
//!
//! Each limit that bites is counted in `ferry_http_limits_total{limit}` and
//! logged (once a second at most).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::log_throttle::LogThrottle;

/// The REST listener's limits (`httpd`).
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub read_header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_per_host: usize,
    pub max_total: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_per_host: 50,
            max_total: 1024,
        }
    }
}

/// What bit, as the metric's `limit` label and the log's text.
#[derive(Debug, Clone, Copy)]
enum Limit {
    PerHost,
    Total,
    HeaderTimeout,
    IdleTimeout,
    NoDescriptors,
}

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Limit::PerHost => "max_connections_per_host",
            Limit::Total => "max_connections",
            Limit::HeaderTimeout => "read_header_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::NoDescriptors => "file_descriptors",
        }
    }

    fn throttle(self) -> &'static LogThrottle {
        static T: [LogThrottle; 5] = [
            LogThrottle::new(),
            LogThrottle::new(),
            LogThrottle::new(),
            LogThrottle::new(),
            LogThrottle::new(),
        ];
        &T[self as usize]
    }

    /// Counts the event and logs it (once a second at most).
    fn bit(self, client: Option<SocketAddr>) {
        crate::metrics::METRICS
            .http_limits
            .with_label_values(&[self.label()])
            .inc();
        if let Some(suppressed) = self.throttle().admit() {
            let client = client.map(|c| c.to_string()).unwrap_or_default();
            let what = match self {
                Limit::PerHost | Limit::Total => "REST connection refused",
                Limit::HeaderTimeout => "REST connection closed: headers not sent in time",
                Limit::IdleTimeout => "REST connection closed: idle",
                Limit::NoDescriptors => "REST connection closed: no file descriptor left",
            };
            warn!(
                limit = format!("httpd.{}", self.label()),
                client, suppressed, "{what}"
            );
        }
    }
}

/// Open connections per client address and in all.
#[derive(Default)]
struct Counts {
    per_host: HashMap<IpAddr, usize>,
    total: usize,
}

/// A connection's slot, given back when dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_host.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_host.remove(&self.ip);
            }
        }
        crate::metrics::METRICS.http_connections.dec();
    }
}

fn take_slot(
    counts: &Arc<Mutex<Counts>>,
    limits: &ListenerLimits,
    ip: IpAddr,
) -> Result<Slot, Limit> {
    let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
    if c.total >= limits.max_total {
        return Err(Limit::Total);
    }
    let n = c.per_host.entry(ip).or_insert(0);
    if *n >= limits.max_per_host {
        return Err(Limit::PerHost);
    }
    *n += 1;
    c.total += 1;
    crate::metrics::METRICS.http_connections.inc();
    Ok(Slot {
        counts: counts.clone(),
        ip,
    })
}

/// The reply to a connection over a limit: written without reading the
/// request (it fits any socket buffer), then the connection is closed.
fn refusal(limit: Limit) -> Vec<u8> {
    let (status, reason, message) = match limit {
        Limit::PerHost => (
            429,
            "Too Many Requests",
            "too many connections from your address (httpd.max_connections_per_host)",
        ),
        _ => (
            503,
            "Service Unavailable",
            "too many connections (httpd.max_connections)",
        ),
    };
    let body = serde_json::json!({"message": message, "error": reason}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// When the connection last moved bytes, and how many requests are in
/// progress on it.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A socket that records its activity.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in progress until its response is ready.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then open
/// connections finish their requests (at most 10 seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut reserve = ferry_dataplane::listeners::FdReserve::take();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of descriptors: the spare is freed, the waiting
                    // client taken off the backlog and closed.
                    if let Some(peer) = reserve.shed(&e, &listener).await {
                        Limit::NoDescriptors.bit(peer);
                    } else {
                        warn!(error = %e, "REST accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        reserve.refill();
        let slot = match take_slot(&counts, &limits, peer.ip().to_canonical()) {
            Ok(s) => s,
            Err(limit) => {
                limit.bit(Some(peer));
                let _ = stream.try_write(&refusal(limit));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            limits.clone(),
            slot,
            stop_rx.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    // Gives open connections their grace period.
    let until = Instant::now() + Duration::from_secs(10);
    while counts.lock().unwrap_or_else(|e| e.into_inner()).total > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ListenerLimits,
    _slot: Slot,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let per_request = activity.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let guard = InFlight::new(&per_request);
            let call = tower::ServiceExt::oneshot(app.clone(), req);
            async move {
                let resp = call.await;
                drop(guard);
                resp
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_left = limits.idle_timeout.saturating_sub(activity.idle_for());
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r
                    && e.is_timeout()
                {
                    Limit::HeaderTimeout.bit(Some(peer));
                }
                return;
            }
            _ = tokio::time::sleep(idle_left.max(Duration::from_millis(100))), if !stopping => {
                if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.idle_for() >= limits.idle_timeout
                {
                    Limit::IdleTimeout.bit(Some(peer));
                    return;
                }
            }
            _ = stop.wait_for(|v| *v), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_host_and_in_all() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let limits = ListenerLimits {
            max_per_host: 2,
            max_total: 3,
            ..Default::default()
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = take_slot(&counts, &limits, a).unwrap();
        let _s2 = take_slot(&counts, &limits, a).unwrap();
        assert!(matches!(
            take_slot(&counts, &limits, a),
            Err(Limit::PerHost)
        ));
        let _s3 = take_slot(&counts, &limits, b).unwrap();
        assert!(matches!(take_slot(&counts, &limits, b), Err(Limit::Total)));
        drop(s1);
        assert!(
            take_slot(&counts, &limits, a).is_ok(),
            "a freed slot is reused"
        );
    }

    #[test]
    fn refusals_are_complete_http_replies() {
        let text = String::from_utf8(refusal(Limit::PerHost)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("max_connections_per_host")
        );
    }
}
