//! The I/O side of a worker: accept loops, hyper connections, graceful drain.
//!
//! `run` takes the listeners, the executor and a shutdown future (so tests
//! and the signal handler drive it the same way). Each listener gets an
//! accept loop that backs off on `EMFILE`; each connection is served by
//! hyper's HTTP/1 server with the `Service` from `service.rs`, after
//! `proxy.rs` (the PROXY preamble, trust in the peer). On shutdown the
//! loops stop accepting and serve what is already queued (`drain.rs`), open
//! connections finish their current request (within `--graceful-timeout`;
//! `graceful.rs` keeps hyper from closing one that has not been read yet),
//! and the executor is closed. Every request ends in `end.rs`. Python is
//! never called from here.

mod drain;
pub(crate) mod end;
mod graceful;
pub(crate) mod proxy;
pub(crate) mod service;

use crate::exec::Executor;
use crate::forwarded::Proxies;
use crate::limits::Limits;
use crate::net::bind::Listener;
use end::Recorder;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use proxy::Peek;
use service::Service;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// How a shutdown was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// TERM: finish in-flight requests within `--graceful-timeout`.
    Graceful,
    /// INT/QUIT: stop now.
    Fast,
}

fn builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        .max_buf_size(limits.read_buffer)
        .header_read_timeout(limits.keep_alive);
    b
}

/// Serves until `shutdown` resolves, then drains and closes the executor.
pub(crate) async fn run(
    listeners: Vec<Listener>,
    limits: Limits,
    proxies: Proxies,
    exec: Arc<Executor>,
    end: Arc<Recorder>,
    shutdown: impl Future<Output = Stop>,
) {
    let limits = Arc::new(limits);
    let proxies = Arc::new(proxies);
    let builder = Arc::new(builder(&limits));
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for l in listeners {
        let (name, port) = l.server_name();
        let ctx = AcceptCtx {
            slots: slots.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            proxies: proxies.clone(),
            end: end.clone(),
            exec: exec.clone(),
            graceful: graceful.clone(),
            server_name: name,
            server_port: port,
        };
        loops.push(tokio::spawn(accept_loop(l, ctx, stop_rx.clone())));
    }
    let how = shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let wait = match how {
        Stop::Graceful => limits.graceful_timeout,
        Stop::Fast => Duration::ZERO,
    };
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        let _ = tokio::time::timeout(wait, graceful.shutdown()).await;
    }
    exec.close();
}

struct AcceptCtx {
    /// `--max-connections`: a permit per open connection; without one,
    /// accepting waits and new connections stay in the kernel's backlog.
    slots: Arc<Semaphore>,
    /// hyper's connection settings, made once from the limits.
    builder: Arc<http1::Builder>,
    /// What the service checks before the app (`--limit-request-body`).
    limits: Arc<Limits>,
    /// Trusted proxies and the PROXY protocol (`proxy.rs`).
    proxies: Arc<Proxies>,
    end: Arc<Recorder>,
    exec: Arc<Executor>,
    graceful: Arc<GracefulShutdown>,
    server_name: String,
    server_port: String,
}

impl AcceptCtx {
    fn serve<I: Peek>(
        &self,
        mut io: I,
        peer: Option<std::net::SocketAddr>,
        slot: OwnedSemaphorePermit,
    ) {
        let (exec, limits, proxies) =
            (self.exec.clone(), self.limits.clone(), self.proxies.clone());
        let (builder, end, watcher) = (
            self.builder.clone(),
            self.end.clone(),
            self.graceful.watcher(),
        );
        let server = (self.server_name.clone(), self.server_port.clone());
        tokio::spawn(async move {
            let _slot = slot;
            // The PROXY preamble, if on, is read before hyper sees a byte.
            // TODO(header-timeout): bound it by --header-timeout once merged.
            let bound = limits.keep_alive;
            let Some(conn) = proxy::accept(&mut io, peer, server, &proxies, bound).await else {
                return;
            };
            let remote = conn.remote_addr();
            let service = Service {
                exec,
                conn: Arc::new(conn),
                limits,
                proxies,
                end: end.clone(),
            };
            let (io, read) = graceful::FirstRead::new(io);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            // Errors here are the client's (reset, bad request): hyper has
            // already answered what deserved an answer; a refused head still
            // ends in the one place every request ends.
            if let Err(e) = graceful::serve(conn, &read, watcher).await {
                end.refused_by_hyper(remote, &e);
            }
        });
    }
}

/// A listener registered with the runtime.
enum Listening {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listening {
    fn register(l: Listener) -> std::io::Result<Listening> {
        Ok(match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listening::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            Listener::Unix(l, _) => {
                l.set_nonblocking(true)?;
                Listening::Unix(tokio::net::UnixListener::from_std(l)?)
            }
        })
    }

    /// Accepts one connection and hands it to hyper.
    async fn accept(&self, ctx: &AcceptCtx, slot: OwnedSemaphorePermit) -> std::io::Result<()> {
        match self {
            Listening::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                ctx.serve(s, Some(peer), slot);
            }
            Listening::Unix(l) => {
                let (s, _) = l.accept().await?;
                ctx.serve(s, None, slot);
            }
        }
        Ok(())
    }
}

async fn accept_loop(listener: Listener, ctx: AcceptCtx, mut stop: watch::Receiver<bool>) {
    let listening = match Listening::register(listener) {
        Ok(l) => l,
        Err(e) => return crate::log::error::error(&format!("Cannot listen: {e}")),
    };
    let mut backoff = Backoff::default();
    loop {
        let accepted = async {
            let slot = ctx.slots.clone().acquire_owned().await.ok()?;
            Some(listening.accept(&ctx, slot).await)
        };
        tokio::select! {
            _ = stop.changed() => return listening.drain(&ctx),
            r = accepted => match r {
                Some(Ok(())) => backoff.reset(),
                Some(Err(e)) => backoff.wait(&e).await,
                None => return,
            },
        }
    }
}

/// Accept errors such as `EMFILE` are retried after a growing pause
/// instead of spinning or giving up.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn reset(&mut self) {
        self.0 = 0;
    }

    async fn wait(&mut self, e: &std::io::Error) {
        if self.0 == 0 {
            crate::log::error::error(&format!("Accept failed: {e}; retrying"));
        }
        self.0 = (self.0 + 1).min(7);
        tokio::time::sleep(Duration::from_millis(5 << self.0)).await;
    }
}
