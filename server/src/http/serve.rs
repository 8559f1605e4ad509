//! The accept loop. `axum::serve` runs hyper without a timer, so a client could hold a
//! connection forever by sending its headers slowly (site keys are public, so anyone could do
//! this). This loop is the same thing with the limits a public service needs:
//!
//! - request headers must arrive within `timeouts.request_header_ms`, from the moment the
//!   connection opens or the previous response ends (so it is also the keep-alive idle limit);
//! - a client that stops reading a response for `timeouts.client_write_ms` is disconnected,
//!   which also drops (and so cancels) its upstream call;
//! - the body limit (`timeouts.request_body_ms`) is applied where the body is read (`ApiJson`).
//!
//! Shutdown never loses what was recorded: in-flight requests, and the resumable answers still
//! being produced whether or not anyone follows them, get `server.shutdown_grace_ms` to finish;
//! then the [`Cut`] ends the answers still open (each settles as interrupted at what it used),
//! connections that still linger (a client that stopped reading) are dropped, which settles
//! theirs, and only then is everything batched in memory written, on every path out of
//! [`serve`]. `serve` fails only if something could not be written.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

use super::{AppState, router};
use crate::resume::Producers;

/// After the cut, the answers it ended get this long to send their last event before their
/// connections are dropped.
const AFTER_CUT: Duration = Duration::from_secs(1);

/// Serves the relay on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (within the grace period, see the module comment) and writes what is batched in memory
/// (usage records, key activity, webhook events). An error means something could not be written.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_flusher, flusher_stopped) = oneshot::channel();
    let flusher = tokio::spawn(flush_periodically(state.clone(), flusher_stopped));
    let deliveries = tokio::spawn(Arc::clone(&state.webhooks).deliver());
    let sweeper = tokio::spawn(crate::conversations::sweep(
        Arc::clone(&state.store),
        Duration::from_millis(state.config.conversations.sweep_every_ms),
    ));
    let knowledge = tokio::spawn(Arc::clone(&state.knowledge).poll(state.config.knowledge.poll()));
    let producers = Some(&*state.producers);
    let result = serve_app(router(state.clone()), &state, listener, shutdown, producers).await;
    // The periodic flush is stopped between two flushes, never in the middle of one.
    let _ = stop_flusher.send(());
    let _ = flusher.await;
    // Deliveries under way are cut short: they are made again after a restart. Waiting for the
    // task to end makes sure this relay sends nothing more once `serve` has returned.
    deliveries.abort();
    let _ = deliveries.await;
    sweeper.abort();
    let _ = sweeper.await;
    knowledge.abort();
    let _ = knowledge.await;
    if !state.flush().await {
        tracing::error!("records batched in memory could not all be written at shutdown");
        return Err(std::io::Error::other(
            "usage records, key activity or webhook events could not be written",
        ));
    }
    result
}

/// Serves only the admin API (`admin.listen`), with the same limits.
pub async fn serve_admin(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(super::admin_router(state.clone()), &state, listener, shutdown, None).await
}

/// Serves only `/metrics` (`metrics.listen`), with the same limits.
pub async fn serve_metrics(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(super::metrics_router(state.clone()), &state, listener, shutdown, None).await
}

/// `producers`: the producers of this listener's resumable streams; those that no client follows
/// any more run in tasks of their own, which shutdown waits for (and cuts) as it does for
/// connections.
async fn serve_app(
    app: Router,
    state: &AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    producers: Option<&Producers>,
) -> std::io::Result<()> {
    let timeouts = &state.config.timeouts;
    // HTTP/1.1 only: browsers reach the relay through a TLS-terminating proxy or directly over
    // HTTP/1.1, and hyper's automatic HTTP/2 detection waits for a client's first bytes with no
    // time limit, which is exactly what a slow client must not get.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request_header())
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();

    loop {
        let (stream, remote) = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(timeouts.client_write()));
        let io = TokioIo::new(Box::pin(stream));
        let service = TowerToHyperService::new(connection_service(app.clone(), remote));
        let connection = graceful.watch(builder.serve_connection(io, service));
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    state.draining.fire();
    let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
    // Once the connections are closed no request can start a producer, so the producers are
    // waited for after them (an answer nobody follows any more is still being produced).
    let finished = async {
        graceful.shutdown().await;
        if let Some(producers) = producers {
            producers.finished().await;
        }
    };
    if tokio::time::timeout(grace, finished).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace_ms = state.config.server.shutdown_grace_ms,
            "requests still open after the grace period; cutting them short"
        );
        state.cut.fire();
        let drained = async {
            while connections.join_next().await.is_some() {}
            if let Some(producers) = producers {
                producers.finished().await;
            }
        };
        let _ = tokio::time::timeout(AFTER_CUT, drained).await;
        // What is left is stuck on a client that stopped reading: dropping its task drops its
        // answer, which settles the answer's meter.
        connections.shutdown().await;
        if let Some(producers) = producers {
            producers.abort().await;
        }
    }
    Ok(())
}

/// Writes the state's batched records every `keys.last_used_flush_ms`, until `stop`.
async fn flush_periodically(state: AppState, mut stop: oneshot::Receiver<()>) {
    let mut every =
        tokio::time::interval(Duration::from_millis(state.config.keys.last_used_flush_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = every.tick() => {}
        }
        state.flush().await;
    }
}

/// The router for one connection, with the peer's address available as `ConnectInfo`.
fn connection_service(
    app: Router,
    remote: SocketAddr,
) -> impl tower::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    app.map_request(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        request
    })
}
