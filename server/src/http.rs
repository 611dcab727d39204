//! The HTTP/1.1 connection loop: hyper serving the poem application.
//!
//! poem's own `Server` cannot be told to write header names in their usual capitalisation,
//! and some clients and tools (and header-comparing scripts) expect `Content-Type` rather than
//! `content-type`; hyper can. ross sits behind nginx, which speaks HTTP/1.1 to upstreams, so
//! HTTP/1.1 with keep-alive is all this loop serves. Shutdown stops accepting, then lets
//! connections finish their requests for up to a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Request};

/// Serves `endpoint` on `listener` until `shutdown` completes, then waits up to `grace` for
/// requests in flight.
pub async fn serve<E>(
    listener: tokio::net::TcpListener,
    endpoint: E,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()>
where
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint);
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let endpoint = endpoint.clone();
        let local = local.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let endpoint = endpoint.clone();
            let req = Request::from((req, local.clone(), RemoteAddr(remote.into()), Scheme::HTTP));
            async move {
                let response = endpoint.get_response(req).await;
                Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, std::io::Error>>::from(
                    response,
                ))
            }
        });
        let mut builder = http1::Builder::new();
        builder.title_case_headers(true).keep_alive(true);
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("requests still running after the grace period"),
    }
    Ok(())
}
