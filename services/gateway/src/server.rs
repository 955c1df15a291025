//! The gateway's HTTP/1 server: hyper's connection loop with the limits `axum::serve` lacks. A
//! semaphore caps the connections served at once (the next one is accepted only when a slot
//! frees, so the excess waits in the kernel's backlog, not in our memory); the head of each
//! request must arrive within the header timeout, which hyper also arms while a keep-alive
//! connection waits for its next request, so an idle connection is closed after it; the body
//! timeout is a layer of the router (`lib.rs`). On shutdown every connection finishes its
//! request in flight and closes.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::ConnectInfo};
use hyper_util::rt::{TokioIo, TokioTimer};
use souk_shared::Shutdown;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tower::ServiceExt as _;

use crate::Limits;

/// How far over `max_header_bytes` hyper itself reads before it gives up with a bare 431: in
/// between, the request reaches the router, which answers a 431 problem (`headers.rs`).
const HEAD_READ_FACTOR: usize = 4;

pub(crate) async fn serve(
    app: Router,
    listener: TcpListener,
    limits: &Limits,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size((limits.max_header_bytes * HEAD_READ_FACTOR).max(8192))
        .max_header_size(limits.max_header_bytes * HEAD_READ_FACTOR);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit?,
            () = shutdown.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = permit;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.wait() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection closed");
            }
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}
