//! The accept loop: HTTP/1.1 connections, at most `API_MAX_CONNECTIONS` at once, each given
//! `API_HEADER_READ_TIMEOUT_MS` to send a request's headers, drained on shutdown.
//!
//! `axum::serve` has neither knob, so this is its loop with them. Past the connection limit a
//! connection waits, unaccepted, in the kernel's listen queue until one closes: a flood costs
//! queue slots, not tasks or memory. The header-read timeout also closes a keep-alive
//! connection that sends nothing for that long between requests, so idle clients cannot hold
//! the connection slots either. HTTP/1.1 only: a load balancer in front speaks HTTP/2 to
//! browsers if wanted, and an HTTP/1.1 connection cannot sit silent past the timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Bounds on the connections one server holds.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting and waits for the
/// open connections to finish their requests (idle ones close at once).
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // out of file descriptors, say: the next accept may well succeed, after
                    // a pause so the loop does not spin
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // a response is written as soon as it is ready, not held back for more
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // a client that goes away or times out is the client's business
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
