//! The I/O side of a worker: accept loops, hyper connections, graceful drain.
//!
//! `run` takes the listeners, the executor and a shutdown future (so tests
//! and the signal handler drive it the same way). Each listener gets an
//! accept loop (`accept.rs`: it backs off on `EMFILE`, and pauses while a
//! gevent hub is held); each connection is served by
//! hyper's HTTP/1 server with the `Service` from `service.rs`, after
//! `proxy.rs` (the PROXY preamble, trust in the peer) and under the head
//! clock of `head_clock.rs` and the write timer of `write_stall.rs`; a
//! response given up on (`ConnInfo::cut`) drops its connection in `drive`;
//! one that leaves a request body unread closes lingering (`LINGER`).
//! Between requests a connection comes to rest: `drive` hands hyper's parts
//! back, the buffers go, `ClockedIo::rest` waits for the next bytes, and a
//! new hyper connection serves them (`held.rs` counts the connections not
//! at rest and trims the heap after a burst).
//! On shutdown the loops stop accepting and serve
//! what is already queued (`drain.rs`); for a moment every response closes
//! its connection, then open connections finish their current request
//! (within `--graceful-timeout`; `drive` says which request that is), and
//! the executor is closed. Every request ends in `end.rs`. Python is never
//! called from here.

mod accept;
mod drain;
pub(crate) mod end;
mod framing;
pub(crate) mod head;
pub(crate) mod head_clock;
#[cfg(test)]
mod head_props;
mod held;
pub(crate) mod proxy;
mod raw_target;
pub(crate) mod service;
mod write_stall;

use crate::error::RequestError;
use crate::exchange::{ConnInfo, ServerName};
use crate::exec::Executor;
use crate::forwarded::Proxies;
use crate::limits::Limits;
use crate::net::bind::Listener;
use accept::{accept_loop, Gate};
use end::Recorder;
use head_clock::{Clock, ClockedIo, Linger};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use proxy::Peek;
use service::Service;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// How a shutdown was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// TERM: finish in-flight requests within `--graceful-timeout`.
    Graceful,
    /// INT/QUIT: stop now.
    Fast,
    /// The worker leaves on its own (`--max-requests`, a hook's retire):
    /// as `Graceful`, but what waits in the accept queue is left to the
    /// others (`drain.rs`).
    Leave,
}

fn builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // `--keep-alive 0`: every response says `Connection: close` and closes,
        // as gunicorn's (an idle timeout of 0 would close without saying so).
        .keep_alive(!limits.keep_alive.is_zero())
        // A client that shuts its writing side after the request still gets
        // its response (then the connection closes).
        .half_close(true)
        .max_buf_size(limits.read_buffer)
        // hyper counts the fields itself (431 past the count) and bounds the
        // whole head by the read buffer; `head.rs` checks the rest.
        .max_headers(max_headers(limits))
        .max_header_size(limits.read_buffer)
        // `head_clock` times heads and idle connections instead.
        .header_read_timeout(None);
    b
}

/// hyper's field count: the option, but never more fields than a read
/// buffer of CRLF lines can hold (4 bytes each, `a:` CRLF), since hyper
/// allocates room for that many on every parse. (Bare LF lines, 3 bytes
/// each, can hold more: past this count they are a head too large.)
fn max_headers(limits: &Limits) -> usize {
    limits.head.fields.min(limits.read_buffer / 4)
}

/// Serves until `shutdown` resolves, then drains and closes the executor.
pub(crate) async fn run(
    listeners: Vec<Listener>,
    limits: Limits,
    proxies: Proxies,
    exec: Arc<Executor>,
    end: Arc<Recorder>,
    mut stops: tokio::sync::mpsc::UnboundedReceiver<Stop>,
) {
    let limits = Arc::new(limits);
    let proxies = Arc::new(proxies);
    let builder = Arc::new(builder(&limits));
    // Every open connection holds a slot: all slots free means all closed.
    let total = limits.max_connections.clamp(1, u32::MAX as usize);
    let total = total.min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(total));
    let draining = Arc::new(AtomicBool::new(false));
    let held = Arc::new(held::Held::default());
    let trimmer = tokio::spawn(held::trim_after_bursts(held.clone()));
    // Turns true once connections should end after their current request.
    let (close_tx, close_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(None);
    let (abort_tx, abort_rx) = watch::channel(false);
    let hub_held = exec.watch_held();
    let mut loops = Vec::new();
    for l in listeners {
        let (name, port) = l.server_name();
        let server = ServerName::new(name, port);
        let ctx = AcceptCtx {
            slots: slots.clone(),
            draining: draining.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            proxies: proxies.clone(),
            end: end.clone(),
            exec: exec.clone(),
            stop: close_rx.clone(),
            abort: abort_rx.clone(),
            server,
            held: held.clone(),
        };
        let (hub, leaving) = (Gate(hub_held.clone()), Gate(Some(end.paused())));
        loops.push(tokio::spawn(accept_loop(
            l,
            ctx,
            stop_rx.clone(),
            hub,
            leaving,
        )));
    }
    let how = stops.recv().await.unwrap_or(Stop::Fast);
    // A fast stop (INT or QUIT) during a graceful one cuts it short.
    let mut fast = std::pin::pin!(async move {
        loop {
            match stops.recv().await {
                Some(Stop::Fast) => return,
                Some(Stop::Graceful | Stop::Leave) => {}
                None => std::future::pending::<()>().await,
            }
        }
    });
    let _ = stop_tx.send(Some(how != Stop::Leave));
    for l in loops {
        let _ = l.await;
    }
    let mut wait = match how {
        Stop::Graceful | Stop::Leave => limits.graceful_timeout,
        Stop::Fast => Duration::ZERO,
    };
    // Set when a fast stop came during the drain (`fast` is then done).
    let mut cut = false;
    if how != Stop::Fast {
        // Keep-alive connections are not cut while a request may be on its
        // way: for a moment every response says `Connection: close`, so
        // busy clients reconnect (to another worker) instead of racing a
        // close; only then are the others told to end.
        draining.store(true, Ordering::Relaxed);
        let window = DRAIN_WINDOW.min(wait);
        let began = std::time::Instant::now();
        let drained = async {
            while began.elapsed() < window && slots.available_permits() < total {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            () = drained => wait = wait.saturating_sub(began.elapsed()),
            () = &mut fast => cut = true,
        }
    }
    let _ = close_tx.send(true);
    let all = u32::try_from(total).unwrap_or(u32::MAX);
    let closed = !cut
        && tokio::select! {
            r = tokio::time::timeout(wait, slots.acquire_many(all)) => r.is_ok(),
            () = &mut fast => {
                cut = true;
                false
            }
        };
    if !closed {
        // One line for them all: a request still in the app when the worker
        // exits has no line of its own (a response cut midway, or handed
        // over but not yet sent at the cut, has). Requests, not
        // connections: one that has sent no head yet loses nothing.
        let running = end.started().saturating_sub(end.served());
        if running > 0 {
            let why = match (how, cut) {
                (Stop::Fast, _) => "a fast stop (INT or QUIT)",
                (_, true) => "a fast stop (INT or QUIT) came during the graceful one",
                (_, false) => "the stop's time ran out (--graceful-timeout)",
            };
            crate::log::error::write(
                crate::log::error::Level::Warning,
                &format!("{running} request(s) still running were cut: {why}"),
            );
        }
        // Time is up: what is still open is cut short, with a reset that
        // says so (a close would pass a response delimited by it for
        // complete). The connections' tasks get a moment to set it.
        STOP_CUT.store(true, Ordering::Relaxed);
        let _ = abort_tx.send(true);
        let _ = tokio::time::timeout(ABORT_GRACE, slots.acquire_many(all)).await;
    }
    trimmer.abort();
    exec.close();
}

/// Set once a stop's time ran out and the connections still open were cut:
/// a body read that failed after it was cut by the stop, not by its client.
static STOP_CUT: AtomicBool = AtomicBool::new(false);

/// Whether this worker's stop has cut the connections still open.
pub(crate) fn stop_cut() -> bool {
    STOP_CUT.load(Ordering::Relaxed)
}

/// How long the connections still open when a stop's time is up get to
/// set their reset (`drive`, `ClockedIo::cut`) before the worker goes on.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// How long a graceful stop answers with `Connection: close` before it
/// closes idle keep-alive connections.
const DRAIN_WINDOW: Duration = Duration::from_secs(1);

struct AcceptCtx {
    /// `--max-connections`: a permit per open connection; without one,
    /// accepting waits and new connections stay in the kernel's backlog.
    slots: Arc<Semaphore>,
    /// Set by a graceful stop: responses then close their connection.
    draining: Arc<AtomicBool>,
    /// hyper's connection settings, made once from the limits.
    builder: Arc<http1::Builder>,
    /// What the service checks before the app (`--limit-request-body`).
    limits: Arc<Limits>,
    /// Trusted proxies and the PROXY protocol (`proxy.rs`).
    proxies: Arc<Proxies>,
    end: Arc<Recorder>,
    exec: Arc<Executor>,
    /// Turns true at shutdown: each connection then ends after its request.
    stop: watch::Receiver<bool>,
    /// Turns true once a stop's time is up: connections still open are cut.
    abort: watch::Receiver<bool>,
    /// The listener's `SERVER_NAME` and `SERVER_PORT`.
    server: Arc<ServerName>,
    /// Connections not at rest (`held.rs`).
    held: Arc<held::Held>,
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
        let (builder, end, stop, draining) = (
            self.builder.clone(),
            self.end.clone(),
            self.stop.clone(),
            self.draining.clone(),
        );
        let server = self.server.clone();
        let held = self.held.clone();
        let mut abort = self.abort.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = crate::metrics::Connection::open();
            // The PROXY preamble, if on, is read before hyper sees a byte,
            // within the head's own bound.
            let bound = limits.header_timeout.unwrap_or(limits.keep_alive);
            let Some(conn) = proxy::accept(&mut io, peer, server, &proxies, bound).await else {
                return;
            };
            let remote = conn.remote_addr();
            let info = Arc::new(conn);
            let _ended = crate::exchange::Ended(info.clone());
            let clock = Clock::new(limits.keep_alive, limits.header_timeout);
            let service = Service {
                exec,
                conn: info.clone(),
                limits: limits.clone(),
                proxies,
                end: end.clone(),
                draining,
                clock: clock.clone(),
            };
            let mut io = ClockedIo::new(io, clock.clone(), end.clone(), info.clone(), &limits);
            let mut service = service;
            let mut stop = stop;
            // This task is as large as its largest await, for the whole life
            // of the connection, at rest too: the driving and the ends (a
            // cut, a lingering close) are boxed, so that they take their
            // hundreds of bytes only while they run (the task: 1.1 KiB
            // instead of 1.8 per connection).
            loop {
                let hold = held.hold();
                let conn = Box::new(builder.serve_connection(TokioIo::new(io), service));
                // Errors here are the client's (reset, bad request): hyper has
                // already answered what deserved an answer; a refused head
                // still ends in the one place every request ends.
                let driven = Box::pin(drive(conn, &mut stop, &mut abort, &info, &clock)).await;
                if info.tell_given_up() {
                    // A response handed over whole, left in the connection's
                    // buffers (one still going was logged as it was cut).
                    end::given_up("A response", &info, None);
                }
                let parts = match driven {
                    Driven::Cut(io) => return Box::pin(io.cut(LINGER.time, &mut abort)).await,
                    Driven::Closed(r, mut io) => {
                        // A body still coming after the response, or the
                        // rest of a refused head: a lingering close.
                        let mut owed = (r.is_ok() && io.body_coming()) || io.answered_early();
                        if let Err(e) = &r {
                            if e.is_parse_version_h2() {
                                // A client speaking HTTP/2 with prior
                                // knowledge: told and logged, as any head
                                // this server cannot read.
                                io.refuse(RequestError::MalformedHead).await;
                                owed = true;
                            }
                        }
                        if let Err(e) = r {
                            owed |= end.refused_by_hyper(remote, &e, io.crowded());
                            if e.is_user() {
                                // The response's body failed part way (the
                                // app raised, or it fell short of its
                                // length): a reset once the client has what
                                // was sent, as for a cut, so that a body
                                // delimited by the close (HTTP/1.0, and
                                // nginx's default upstream) is not taken
                                // for complete.
                                return Box::pin(io.cut(LINGER.time, &mut abort)).await;
                            }
                        }
                        return Box::pin((*io).close(owed.then_some(LINGER))).await;
                    }
                    Driven::AtRest(parts) => parts,
                };
                drop(hold);
                // hyper's buffers are gone with it; the next bytes bring a
                // new one (`drive`).
                let http1::Parts {
                    io: rested,
                    read_buf,
                    service: s,
                    ..
                } = *parts;
                (io, service) = (rested.into_inner(), s);
                if !io.rest(read_buf, &mut stop).await {
                    return;
                }
            }
        });
    }
}

/// A lingering close (`ClockedIo::close`) waits this long at most for the
/// client to stop sending a body the response did not wait for, and reads
/// this much of it at most: enough for a proxy in front to read the response
/// and stop, bounded for a client that keeps sending regardless.
const LINGER: Linger = Linger {
    time: Duration::from_secs(2),
    bytes: 16 * 1024 * 1024,
};

/// How `drive` left a connection.
enum Driven<S: Peek> {
    /// It ended (hyper's error, if any, is the client's); the socket,
    /// its write side usually shut down by hyper already, is handed back
    /// to be closed.
    Closed(hyper::Result<()>, Box<ClockedIo<S>>),
    /// A response was given up on (`ConnInfo::cut`), or the stop's time is
    /// up: the socket, to reset once the client took what the kernel holds
    /// (or took nothing for 2 s; at once when the stop's time is up).
    Cut(Box<ClockedIo<S>>),
    /// It went to rest between two requests: hyper's parts, to wait
    /// without hyper's buffers for the next request.
    AtRest(Box<http1::Parts<TokioIo<ClockedIo<S>>, Service>>),
}

type Conn<S> = http1::Connection<TokioIo<ClockedIo<S>>, Service>;

/// Serves one connection until it ends or comes to rest. Once `stop` turns
/// true, the connection finishes the request it is on, then closes
/// (hyper's graceful shutdown); once `abort` does too, it is cut. A
/// connection accepted before the stop whose first request head has not
/// come in yet is not closed at once, as hyper would (the client may have
/// sent that request already: it would be lost, say during a HUP reload);
/// it gets that first request, within hyper's head timeout (`--keep-alive`).
///
/// At rest (`Clock::at_rest` and `ConnInfo::body_done`: hyper idle between
/// two requests, nothing unwritten, no byte of the next head) hyper is
/// asked to stop, which an idle hyper does at once, and its parts are
/// handed back: an idle keep-alive connection then holds no hyper buffers
/// (16 KiB), only the socket and Siesta's own state.
async fn drive<S: Peek>(
    mut conn: Box<Conn<S>>,
    stop: &mut watch::Receiver<bool>,
    abort: &mut watch::Receiver<bool>,
    info: &ConnInfo,
    clock: &Clock,
) -> Driven<S> {
    let mut stopping = std::pin::pin!(stop.wait_for(|stopped| *stopped));
    // Looked at only once stopping: no cost while serving.
    let mut aborting = std::pin::pin!(abort.wait_for(|aborted| *aborted));
    let (mut asked, mut told) = (false, false);
    // A new hyper connection is idle only once it has served a request:
    // until then, one holding part of a head (handed back from the last
    // one) would take the stop as "close after this request".
    let first = info.requests();
    let mut resting = false;
    let rested = std::future::poll_fn(|cx| {
        if info.poll_cut(cx) {
            return Poll::Ready(Ok(Ended::Cut));
        }
        if !asked && stopping.as_mut().poll(cx).is_ready() {
            asked = true;
        }
        if asked && aborting.as_mut().poll(cx).is_ready() {
            // The stop's time is up with this connection still open.
            return Poll::Ready(Ok(Ended::Cut));
        }
        loop {
            if asked && !told && info.had_request() {
                told = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            // hyper's own poll, not `poll_without_shutdown`: only this one
            // flushes hyper's write buffer before it reports the end (the
            // other drops the rest of a large response whose request body
            // was given up). `serve` then lingers on the read side.
            let polled = Pin::new(&mut *conn).poll(cx);
            if polled.is_pending() && clock.take_unarmed() {
                // The response ended after hyper's last read, which found
                // the request busy (hyper 1.x: a last chunk that filled its
                // write buffer is flushed first, which idles the connection
                // and reads once, blocked, before the body is dropped):
                // hyper now waits on the socket alone, and only a read arms
                // the keep-alive deadline. Polled again on the task's next
                // turn (not at once: hyper may have just yielded its turn),
                // hyper reads its next head, and the read arms it.
                cx.waker().wake_by_ref();
            }
            if polled.is_pending()
                && !told
                && !resting
                && info.requests() > first
                && clock.at_rest()
                && info.body_done()
            {
                resting = true;
                Pin::new(&mut *conn).graceful_shutdown();
                match conn.poll_without_shutdown(cx) {
                    Poll::Ready(r) => {
                        crate::log::error::write(
                            crate::log::error::Level::Debug,
                            "A keep-alive connection came to rest",
                        );
                        return Poll::Ready(r.map(|()| Ended::AtRest));
                    }
                    // Not idle after all: hyper closes after this exchange.
                    Poll::Pending => crate::log::error::write(
                        crate::log::error::Level::Debug,
                        "A connection taken to be at rest was not",
                    ),
                }
            }
            // A first head that came in during this poll: tell hyper now.
            if polled.is_ready() || told || !asked || !info.had_request() {
                return polled.map(|r| r.map(|()| Ended::Closed));
            }
        }
    })
    .await;
    match rested {
        Ok(Ended::AtRest) => Driven::AtRest(Box::new(conn.into_parts())),
        // hyper's connection goes, and with it what it still held.
        Ok(Ended::Cut) => Driven::Cut(Box::new(conn.into_parts().io.into_inner())),
        r => Driven::Closed(r.map(|_| ()), Box::new(conn.into_parts().io.into_inner())),
    }
}

/// How hyper's part of a connection ended, in `drive`.
enum Ended {
    AtRest,
    Closed,
    Cut,
}
