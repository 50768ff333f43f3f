//! The metrics process: `--metrics-bind` served by Siesta itself, never by the app.
//!
//! The master forks this process like a worker (`supervisor/observer.rs`)
//! and hands it the listener it bound; `serve` then runs a small tokio
//! runtime and hyper server of its own, so it answers while every app
//! thread or greenlet of every worker is busy. Each request reads the
//! shared region (`metrics/region.rs`) afresh: `/metrics` (Prometheus
//! text, `exposition.rs`), `/status` and `/status.json` (`page.rs`),
//! `/healthz` (alive) and `/readyz` (not while starting, reloading or
//! stopping). It never touches Python and never writes to the region.

pub(crate) mod exposition;
pub(crate) mod page;
pub(crate) mod snapshot;

use crate::metrics::region::Region;
use crate::net::bind::Listener;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use snapshot::Snapshot;
use std::convert::Infallible;
use std::time::Duration;

/// What the metrics process needs besides the region.
#[derive(Clone, Copy)]
pub(crate) struct Settings {
    /// `--slow-upload-rate`, bytes/s.
    pub slow_upload_rate: u64,
}

type Response = http::Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut r = http::Response::new(Full::new(body.into()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// One request to the metrics listener.
pub(crate) fn route(
    region: &Region,
    settings: Settings,
    method: &http::Method,
    path: &str,
) -> Response {
    if method != http::Method::GET && method != http::Method::HEAD {
        return reply(405, "text/plain; charset=utf-8", "GET only\n");
    }
    let snap = || Snapshot::take(region, settings.slow_upload_rate);
    match path {
        "/metrics" => match exposition::render(snap()) {
            Ok(text) => reply(200, exposition::CONTENT_TYPE, text),
            Err(_) => reply(
                500,
                "text/plain; charset=utf-8",
                "cannot encode the metrics\n",
            ),
        },
        "/status" | "/status/" => reply(200, "text/html; charset=utf-8", page::STATUS_HTML),
        "/status.json" => reply(200, "application/json", page::json(&snap())),
        "/healthz" => reply(200, "text/plain; charset=utf-8", "ok\n"),
        "/readyz" => match snap().ready() {
            Ok(()) => reply(200, "text/plain; charset=utf-8", "ready\n"),
            Err(why) => reply(
                503,
                "text/plain; charset=utf-8",
                format!("not ready: {why}\n"),
            ),
        },
        "/" => reply(
            200,
            "text/html; charset=utf-8",
            "<!doctype html><meta charset=utf-8><title>Siesta</title>\
             <p>Siesta's own endpoints: <a href=/status>/status</a> \
             <a href=/metrics>/metrics</a> <a href=/status.json>/status.json</a> \
             <a href=/healthz>/healthz</a> <a href=/readyz>/readyz</a>\n",
        ),
        _ => reply(404, "text/plain; charset=utf-8", "not found\n"),
    }
}

/// The metrics process's whole life (in the forked child): serve until
/// killed. `reopen` is called at each SIGUSR1 (the master's log rotation:
/// the error log this process inherited is opened again by its path).
pub(crate) fn serve(
    listener: Listener,
    region: Region,
    settings: Settings,
    reopen: fn(),
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1())?;
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                reopen();
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(Duration::from_secs(10));
        match listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                loop {
                    match l.accept().await {
                        Ok((s, _)) => spawn_conn(&builder, s, region, settings),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
            Listener::Unix(l, _) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::UnixListener::from_std(l)?;
                loop {
                    match l.accept().await {
                        Ok((s, _)) => spawn_conn(&builder, s, region, settings),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
    })
}

fn spawn_conn<I>(builder: &http1::Builder, io: I, region: Region, settings: Settings)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let r = route(&region, settings, req.method(), req.uri().path());
        async move { Ok::<_, Infallible>(r) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::spawn(async move {
        let _ = conn.await;
    });
}
