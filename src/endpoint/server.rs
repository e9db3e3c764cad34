//! The endpoint's HTTP shell: hyper 1 serving HTTP/1.1 on `STARTGATE_LISTEN`, answering every
//! request from [`respond`](super::respond) and the latest status on a watch channel.
//!
//! Bounds, so that no client can stall the kubelet's probes: at most [`MAX_CONNECTIONS`] at
//! once (one more is closed at once rather than queued); request headers must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`]; request bodies are never read; a
//! connection lives at most [`CONNECTION_LIFETIME`]. Each request is answered from memory
//! without waiting on anything else, so a slow database never slows `/livez`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::{Request, respond};
use crate::progress::Status;

pub const MAX_CONNECTIONS: usize = 256;
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The endpoint could not listen.
#[derive(Debug, thiserror::Error)]
#[error("STARTGATE_LISTEN={addr}: cannot listen there: {source}{hint}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
    hint: &'static str,
}

/// A running endpoint; it stops when dropped (or when the runtime ends).
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `addr` and serves `status` from now on.
pub async fn start(
    addr: SocketAddr,
    status: watch::Receiver<Status>,
    token: Option<String>,
) -> Result<Endpoint, BindError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process listens there, perhaps the app or a second startgate; set \
                 STARTGATE_LISTEN to another address, or to an empty value to serve no endpoint)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need privileges; use a higher port)"
            }
            _ => "",
        };
        BindError { addr, source, hint }
    })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let token: Option<Arc<str>> = token.map(Arc::from);
    let task = tokio::spawn(accept_loop(listener, status, token));
    tracing::info!(event = "endpoint", address = %addr, "serving /livez, /startupz, /readyz, /status and /metrics on {addr}");
    Ok(Endpoint { addr, task })
}

async fn accept_loop(
    listener: TcpListener,
    status: watch::Receiver<Status>,
    token: Option<Arc<str>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a moment rather than spin, and go on serving.
                tracing::debug!(error = %e, "endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closing at once tells the client more than a queue it may never leave.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let status = status.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let reply = {
                    let current = status.borrow();
                    let authorization = request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .map(HeaderValue::as_bytes);
                    respond(
                        &Request {
                            method: request.method().as_str(),
                            path: request.uri().path(),
                            query: request.uri().query(),
                            authorization,
                        },
                        &current,
                        token.as_deref(),
                        SystemTime::now(),
                    )
                };
                async move {
                    let mut response = hyper::Response::new(Full::new(Bytes::from(reply.body)));
                    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(reply.content_type),
                    );
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}
