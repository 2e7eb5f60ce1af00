//! The API's HTTP server: hyper under the axum router, with what
//! `axum::serve` does not offer and an exposed port needs: a cap on
//! connections, a deadline for each request's header and for each
//! request, TLS beside plaintext on the same port (plaintext only where
//! `plaintext_api` permits), and a shutdown that waits for requests in
//! flight only up to a deadline. Hand-written because no crate in the
//! chosen set does these around axum; it is a loop of accepts and hyper's
//! own HTTP/1 connection driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use portcullis_core::tls::PlaintextLogin;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// First byte of a TLS ClientHello record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Whether a request came over TLS (`https`) or not (`http`), as the
/// connection it came on says, for the URLs the console builds.
#[derive(Debug, Clone, Copy)]
pub struct Scheme(pub &'static str);

/// How the API port is served.
#[derive(Clone)]
pub struct ApiServerConfig {
    /// TLS for clients that start with a TLS handshake.
    pub tls: Option<Arc<ServerConfig>>,
    /// Where plaintext HTTP is accepted (bearer tokens travel in it).
    pub plaintext: PlaintextLogin,
    /// Connections open at once, overall and per source address; more
    /// are closed at accept.
    pub connections: portcullis_core::preauth::PreAuthGate,
    /// Time to send a request's header (and to start the next one on a
    /// kept-alive connection), and to finish a TLS handshake.
    pub header_timeout: Duration,
    /// Time to read a request's body and answer it.
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_deadline: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in
/// flight finish until the deadline and drops the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ApiServerConfig,
    shutdown: CancellationToken,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        cfg.request_timeout,
        request_deadline,
    ));
    let mut connections = JoinSet::new();
    let accept_failures = portcullis_core::preauth::LogEvery::default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    metrics::counter!("portcullis_accept_failures_total", "listener" => "api").increment(1);
                    if let Some(held) = accept_failures.due(portcullis_core::preauth::LOG_EVERY) {
                        tracing::warn!(error = %e, also_failed_since_last_report = held, "API accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = cfg.connections.enter(peer.ip()) else {
            continue;
        };
        let (router, cfg, stop) = (router.clone(), cfg.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            if let Err(why) = serve_connection(tcp, peer, router, &cfg, stop).await {
                tracing::debug!(%peer, why, "API connection closed");
            }
        });
    }
    // Requests in flight get until the deadline (each connection was told
    // to finish its current request and close); then the rest are dropped.
    let drained = tokio::time::timeout(cfg.shutdown_deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "API connections still open at the shutdown deadline were dropped"
        );
        connections.abort_all();
    }
}

/// One connection: TLS or plaintext by its first byte, then HTTP/1.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    cfg: &ApiServerConfig,
    stop: CancellationToken,
) -> Result<(), &'static str> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(cfg.header_timeout, tcp.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return Err("nothing sent in time");
    }
    let tls = first[0] == TLS_HANDSHAKE;
    let service = TowerToHyperService::new(
        router
            .layer(axum::Extension(ConnectInfo(peer)))
            .layer(axum::Extension(Scheme(if tls { "https" } else { "http" }))),
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .keep_alive(true);
    if tls {
        let tls_cfg = cfg.tls.clone().ok_or("TLS is not configured")?;
        let accept = tokio_rustls::TlsAcceptor::from(tls_cfg).accept(tcp);
        let tls = tokio::time::timeout(cfg.header_timeout, accept)
            .await
            .map_err(|_| "TLS handshake timed out")?
            .map_err(|_| "TLS handshake failed")?;
        let conn = http.serve_connection(TokioIo::new(tls), service);
        drive(conn, stop).await
    } else {
        if !cfg.plaintext.permits(peer) {
            metrics::counter!("portcullis_api_connections_refused_total").increment(1);
            return Err("plaintext HTTP is not accepted from this address");
        }
        let conn = http.serve_connection(TokioIo::new(tcp), service);
        drive(conn, stop).await
    }
}

/// Runs a connection; on shutdown, asks it to finish the request in
/// flight and close.
async fn drive<C>(conn: C, stop: CancellationToken) -> Result<(), &'static str>
where
    C: std::future::Future<Output = hyper::Result<()>> + GracefulConnection,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r.map_err(|_| "HTTP error"),
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await.map_err(|_| "HTTP error")
}

/// hyper's connections shut down gracefully through an inherent method;
/// this names it for [`drive`].
trait GracefulConnection {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

/// Ends a request that takes longer than `limit` to send its body and be
/// answered (503): a client trickling a body would otherwise hold a
/// connection as long as it likes.
async fn request_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "the request took too long" })),
        )
            .into_response(),
    }
}
