//! The I/O side of a worker: accept loops, hyper connections, graceful drain.
//!
//! `run` takes the listeners, the executor and a shutdown future (so tests
//! and the signal handler drive it the same way). Each listener gets an
//! accept loop that backs off on `EMFILE`; each connection is served by
//! hyper's HTTP/1 server with the `Service` from `service.rs`. On shutdown
//! the loops stop accepting, open connections finish their current request
//! (within `--graceful-timeout`), and the executor is closed. Python is
//! never called from here.

pub(crate) mod head;
pub(crate) mod head_clock;
#[cfg(test)]
mod head_props;
pub(crate) mod service;

use crate::exec::{Executor, Worker};
use crate::net::bind::Listener;
use crate::wsgi::environ::ConnInfo;
use head_clock::{Clock, Clocked, ClockedIo};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use service::Service;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// How a shutdown was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// TERM: finish in-flight requests within `--graceful-timeout`.
    Graceful,
    /// INT/QUIT: stop now.
    Fast,
}

fn builder(worker: &Worker) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        // A client that shuts its writing side after the request still gets
        // its response (then the connection closes).
        .half_close(true)
        .max_buf_size(worker.limits.read_buffer)
        // hyper counts the fields itself (431 past the count) and bounds the
        // whole head by the read buffer; `head.rs` checks the rest.
        .max_headers(max_headers(&worker.limits))
        .max_header_size(worker.limits.read_buffer)
        // `head_clock` times heads and idle connections instead.
        .header_read_timeout(None);
    b
}

/// hyper's field count: the option, but never more fields than the read
/// buffer can hold (4 bytes each, `a:` CRLF), since hyper allocates room
/// for that many on every parse.
fn max_headers(limits: &crate::limits::Limits) -> usize {
    limits.head.fields.min(limits.read_buffer / 4)
}

/// Serves until `shutdown` resolves, then drains and closes the executor.
pub(crate) async fn run(
    listeners: Vec<Listener>,
    worker: Arc<Worker>,
    exec: Arc<Executor>,
    shutdown: impl Future<Output = Stop>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for l in listeners {
        let (name, port) = l.server_name();
        let ctx = AcceptCtx {
            worker: worker.clone(),
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
        Stop::Graceful => worker.limits.graceful_timeout,
        Stop::Fast => Duration::ZERO,
    };
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        let _ = tokio::time::timeout(wait, graceful.shutdown()).await;
    }
    exec.close();
}

struct AcceptCtx {
    worker: Arc<Worker>,
    exec: Arc<Executor>,
    graceful: Arc<GracefulShutdown>,
    server_name: String,
    server_port: String,
}

impl AcceptCtx {
    fn serve<I>(&self, io: I, peer: Option<std::net::SocketAddr>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = Service {
            exec: self.exec.clone(),
            conn: Arc::new(ConnInfo::new(
                peer,
                self.server_name.clone(),
                self.server_port.clone(),
            )),
            head_limits: self.worker.limits.head,
        };
        let clock = Clock::new(
            self.worker.limits.keep_alive,
            self.worker.limits.header_timeout,
        );
        let service = Clocked {
            service,
            clock: clock.clone(),
        };
        let io = TokioIo::new(ClockedIo::new(io, clock));
        let conn = builder(&self.worker).serve_connection(io, service);
        let conn = self.graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are the client's (reset, bad request): hyper has
            // already answered what deserved an answer.
            let _ = conn.await;
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
    async fn accept(&self, ctx: &AcceptCtx) -> std::io::Result<()> {
        match self {
            Listening::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                ctx.serve(s, Some(peer));
            }
            Listening::Unix(l) => {
                let (s, _) = l.accept().await?;
                ctx.serve(s, None);
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
        tokio::select! {
            _ = stop.changed() => return,
            r = listening.accept(&ctx) => match r {
                Ok(()) => backoff.reset(),
                Err(e) => backoff.wait(&e).await,
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
