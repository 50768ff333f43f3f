//! What travels between the I/O side and the app side for one request.
//!
//! The I/O side (`server/`) parses a head and makes a `Job`: the head's
//! `Record`, hyper's body stream, and a `ReplySender` for the response head.
//! The app side (`wsgi/`, run by an executor from `exec/`) sends back one
//! `Reply`, whose body may keep flowing through a `Pipe`. These types sit
//! below every other layer so that each side can name them without naming
//! the other; they hold data and the rules of handing it over, never policy.

pub(crate) mod chunks;
pub(crate) mod file_body;
pub(crate) mod pipe;
pub(crate) mod record;
pub(crate) mod reply;

use hyper::body::Incoming;
use pyo3::prelude::*;
use pyo3::types::PyString;
use record::Record;
use reply::{Reply, ReplySender};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Waker};
use std::time::Instant;

/// Facts about the connection a request came in on.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The socket's peer, `None` on a unix socket.
    pub peer: Option<SocketAddr>,
    /// The client a PROXY protocol preamble named (`server/proxy.rs`):
    /// `REMOTE_ADDR` then, instead of the proxy that is the peer.
    pub client: Option<SocketAddr>,
    /// The peer may name the scheme (`--forwarded-allow-ips`); otherwise
    /// its scheme headers are not even looked at.
    pub trusted: bool,
    /// A PROXY v2 preamble said the client spoke TLS to the proxy.
    pub tls: bool,
    /// The listener's host and port: `SERVER_NAME` and `SERVER_PORT`
    /// (on a unix socket, only when the request has no `Host`).
    pub server: Arc<ServerName>,
    /// `REMOTE_ADDR` and `REMOTE_PORT` as Python strings, made on the
    /// connection's first request and reused by the next ones.
    remote: OnceLock<(Py<PyString>, Py<PyString>)>,
    /// How many request heads came in on this connection; once one has, a
    /// graceful stop may close it after the request it is on (`server/`'s
    /// drain).
    requests: AtomicU64,
    /// The number of the request whose body hyper may still be reading,
    /// 0 when none: until it ends, the connection is not at rest.
    open_body: AtomicU64,
    /// How many requests, head and body, the connection has read from its
    /// socket in whole (`server/`'s `ClockedIo`, by its `Framing`): the
    /// rest of a body among them is in memory, and discarding it cannot
    /// wait on the client.
    read_through: AtomicU64,
    /// `server/`'s `drive` found the connection at rest but for its body:
    /// the body's end wakes the connection's task.
    awaits_body: AtomicBool,
    /// Set by `cut`: the connection is to close now, whatever hyper holds.
    cut: AtomicBool,
    /// `--keep-alive` ran out after a response while its body was still
    /// open (read in the iterable's `close()`): the body's reads then say
    /// so, not that the client went away.
    idle_cut: AtomicBool,
    /// The last write to the socket found it full (`server/`'s `ClockedIo`).
    write_full: AtomicBool,
    /// The connection's task has ended: the socket is closed (`Ended`).
    ended: AtomicBool,
    /// The client took no response byte for `--body-timeout`, and the
    /// connection was given up (`GIVEN_UP`), and the cut was logged
    /// (`TOLD`).
    given_up: AtomicU8,
    /// Writes to the socket that went through (`ClockedIo`; only the
    /// connection's task writes it).
    writes: AtomicU64,
    /// The socket's descriptor (-1 when unknown), for `peer_closed`. The
    /// connection's task owns the socket; while a request's reply is still
    /// awaited, that task, and so the socket, is alive.
    pub fd: i32,
    /// The connection task's waker, for `cut` and the body's end, taken by
    /// the first `poll_cut` (one task drives a connection: its waker stays
    /// the same).
    waker: OnceLock<Waker>,
}

/// `ConnInfo::given_up`'s bits.
const GIVEN_UP: u8 = 1;
const TOLD: u8 = 2;

impl ConnInfo {
    pub(crate) fn new(peer: Option<SocketAddr>, server: Arc<ServerName>) -> Self {
        ConnInfo {
            peer,
            client: None,
            trusted: false,
            tls: false,
            server,
            remote: OnceLock::new(),
            requests: AtomicU64::new(0),
            open_body: AtomicU64::new(0),
            read_through: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            idle_cut: AtomicBool::new(false),
            write_full: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            given_up: AtomicU8::new(0),
            writes: AtomicU64::new(0),
            awaits_body: AtomicBool::new(false),
            fd: -1,
            waker: OnceLock::new(),
        }
    }

    /// Whether the connection's task has ended (its socket closed).
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// The client took no response byte for `--body-timeout`: the socket's
    /// timer (`server/`'s `ClockedIo`) or the app's side of a stream
    /// (`wsgi/start_response`) gave the connection up. The response's end
    /// says so in the error log (`server/end.rs`).
    pub(crate) fn give_up(&self) {
        self.given_up.fetch_or(GIVEN_UP, Ordering::Relaxed);
    }

    /// Whether the connection was given up (`give_up`).
    pub(crate) fn given_up(&self) -> bool {
        self.given_up.load(Ordering::Relaxed) & GIVEN_UP != 0
    }

    /// Whether the connection was given up and this is the first to ask:
    /// the cut is logged once, by the response it cut or else by the
    /// connection's end.
    pub(crate) fn tell_given_up(&self) -> bool {
        self.given_up() && self.given_up.fetch_or(TOLD, Ordering::Relaxed) & TOLD == 0
    }

    /// Closes the connection at once: `server/`'s `drive` drops it on its
    /// next poll. For a streamed response that hyper took nothing of for
    /// `--body-timeout` although the socket had room (a client that takes
    /// nothing fills the socket, and the socket's own timer ends it): the
    /// abort alone reaches hyper only when it polls the body again, which
    /// a connection that stopped moving may never do.
    pub(crate) fn cut(&self) {
        // SeqCst here and in `poll_cut`: of a cut and a first registration
        // racing, one sees the other.
        self.cut.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.get() {
            w.wake_by_ref();
        }
    }

    /// Notes a write to the socket: it went through, or found the socket
    /// full. Called by the connection's task only.
    pub(crate) fn note_write(&self, full: bool) {
        if self.write_full.load(Ordering::Relaxed) != full {
            self.write_full.store(full, Ordering::Relaxed);
        }
        if !full {
            let n = self.writes.load(Ordering::Relaxed);
            self.writes.store(n.wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// The response's progress on the socket, for the app's side of
    /// `--body-timeout`: whether hyper's last write found the socket full
    /// (its client slower than the response), and how many writes went
    /// through so far. While the socket is full, the socket's own timer
    /// (`server/`'s `write_stall.rs`) judges the client by the bytes it
    /// takes, which what hyper took from the response body cannot show:
    /// hyper takes more only once the socket has room again, and the kernel
    /// says so only after a good part of its buffer drained.
    pub(crate) fn write_progress(&self) -> (bool, u64) {
        (
            self.write_full.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }

    /// Whether `cut` was called; when not, `cx`'s task (the connection's)
    /// is woken if it is.
    pub(crate) fn poll_cut(&self, cx: &mut Context<'_>) -> bool {
        if self.cut.load(Ordering::SeqCst) {
            return true;
        }
        if self.waker.get().is_none() {
            let _ = self.waker.set(cx.waker().clone());
        }
        // A cut between the first look and the registration found no waker.
        self.cut.load(Ordering::SeqCst)
    }

    /// Notes that a request head came in (the service calls this, on the
    /// connection's task). A request whose body has yet to arrive gets the
    /// token that says when it has.
    pub(crate) fn note_request(self: &Arc<Self>, body_open: bool) -> Option<BodyEnd> {
        // Only the connection's task counts, so a load and a store will do.
        let n = self.requests.load(Ordering::Relaxed) + 1;
        self.requests.store(n, Ordering::Relaxed);
        self.open_body
            .store(if body_open { n } else { 0 }, Ordering::Relaxed);
        body_open.then(|| BodyEnd {
            conn: self.clone(),
            n,
        })
    }

    /// Notes that the first `n` requests were read from the socket in whole
    /// (called by the connection's task only).
    pub(crate) fn note_read_through(&self, n: u64) {
        if self.read_through.load(Ordering::Relaxed) < n {
            self.read_through.store(n, Ordering::Release);
        }
    }

    /// Whether the client reset the connection: the socket, peeked without
    /// taking a byte, is in error. hyper reads nothing while a request is
    /// under way, so it would not know until it writes the response. Its
    /// end (a FIN) does not count: a client that shut its writing side
    /// after the request is still answered (DESIGN.md), and a FIN cannot
    /// tell it from one that closed the socket.
    pub(crate) fn peer_closed(&self) -> bool {
        if self.fd < 0 {
            return false;
        }
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a live local; `fd` is the socket the
        // connection's task owns and keeps open while the reply is awaited.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            n if n >= 0 => false,
            _ => !matches!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }

    /// Whether any request head came in on this connection yet.
    pub(crate) fn had_request(&self) -> bool {
        self.requests() > 0
    }

    /// How many request heads came in on this connection.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `--keep-alive` closes the connection: a body still open then (an
    /// app reading it after its response, in `close()`) was cut by it.
    pub(crate) fn note_keep_alive_cut(&self) {
        if self.open_body.load(Ordering::SeqCst) != 0 {
            self.idle_cut.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the last request's body has been read to its end (or it had
    /// none): hyper is then done reading it. When not, the end wakes the
    /// connection's task (registered by `poll_cut`).
    pub(crate) fn body_done(&self) -> bool {
        if self.open_body.load(Ordering::SeqCst) == 0 {
            return true;
        }
        // SeqCst here and in `BodyEnd::reached`: of an end and this wish
        // racing, one sees the other.
        self.awaits_body.store(true, Ordering::SeqCst);
        self.open_body.load(Ordering::SeqCst) == 0
    }

    /// The client as the app and the logs see it: the PROXY preamble's
    /// source, else the peer.
    pub(crate) fn remote_addr(&self) -> Option<SocketAddr> {
        self.client.or(self.peer)
    }

    /// `REMOTE_ADDR` and `REMOTE_PORT` (empty strings on a unix socket).
    pub(crate) fn remote<'py>(
        &self,
        py: Python<'py>,
    ) -> (&Bound<'py, PyString>, &Bound<'py, PyString>) {
        let (addr, port) = self.remote.get_or_init(|| match self.remote_addr() {
            Some(p) => (
                PyString::new(py, &p.ip().to_string()).unbind(),
                PyString::new(py, &p.port().to_string()).unbind(),
            ),
            None => (
                PyString::new(py, "").unbind(),
                PyString::new(py, "").unbind(),
            ),
        });
        (addr.bind(py), port.bind(py))
    }
}

/// A listener's host and port (`SERVER_NAME`, `SERVER_PORT`), shared by
/// its connections: made into Python strings once, not per request.
#[derive(Debug)]
pub(crate) struct ServerName {
    name: String,
    port: String,
    py: OnceLock<(Py<PyString>, Py<PyString>)>,
}

impl ServerName {
    pub(crate) fn new(name: String, port: String) -> Arc<Self> {
        Arc::new(ServerName {
            name,
            port,
            py: OnceLock::new(),
        })
    }

    /// The name and port as Python strings.
    pub(crate) fn py<'py>(
        &self,
        py: Python<'py>,
    ) -> (&Bound<'py, PyString>, &Bound<'py, PyString>) {
        let (name, port) = self.py.get_or_init(|| {
            (
                PyString::new(py, &self.name).unbind(),
                PyString::new(py, &self.port).unbind(),
            )
        });
        (name.bind(py), port.bind(py))
    }
}

/// Says when a request's body has been read to its end, by the app or by
/// the drain after it; a body given up on never says so (hyper then closes
/// the connection anyway).
#[derive(Debug)]
pub(crate) struct BodyEnd {
    conn: Arc<ConnInfo>,
    n: u64,
}

impl BodyEnd {
    /// Whether the connection has read this body's end from its socket:
    /// what hyper has yet to hand over of it is in memory.
    pub(crate) fn read_in(&self) -> bool {
        self.conn.read_through.load(Ordering::Acquire) >= self.n
    }

    /// Whether `--keep-alive` closed the connection while this body was
    /// open (`ConnInfo::note_keep_alive_cut`).
    pub(crate) fn cut_by_keep_alive(&self) -> bool {
        self.conn.idle_cut.load(Ordering::SeqCst)
    }

    pub(crate) fn reached(self) {
        // Only this request's own mark is cleared: a late end of an earlier
        // body cannot vouch for a later one.
        let ended =
            self.conn
                .open_body
                .compare_exchange(self.n, 0, Ordering::SeqCst, Ordering::Relaxed);
        if ended.is_ok() && self.conn.awaits_body.swap(false, Ordering::SeqCst) {
            if let Some(w) = self.conn.waker.get() {
                w.wake_by_ref();
            }
        }
    }
}

/// One request waiting for the app.
pub(crate) struct Job {
    /// The head and the request's bookkeeping, shared with the I/O side.
    pub record: Arc<Record>,
    pub body: Incoming,
    /// Says when `body` has been read to its end.
    pub body_end: Option<BodyEnd>,
    /// Where the response head goes; the service future waits on the other end.
    pub reply: ReplySender,
    /// When the job was queued, for `--queue-timeout`.
    pub queued: Instant,
}

/// A job that waited this long for a thread (or a greenlet slot) gets a
/// look at its socket before the app runs for it.
const QUEUED_LONG: std::time::Duration = std::time::Duration::from_millis(5);

impl Job {
    /// The client left while the job waited, so the app is not run for it:
    /// hyper dropped the reply's receiver, or, after a wait, the socket
    /// says the peer reset the connection (`ConnInfo::peer_closed`); that
    /// connection is then cut. Clients that gave up in a burst would
    /// otherwise hold the queue in front of live ones, and be shed.
    pub(crate) fn client_gone(&self) -> bool {
        if self.reply.is_closed() {
            return true;
        }
        if self.queued.elapsed() < QUEUED_LONG || !self.record.conn.peer_closed() {
            return false;
        }
        self.record.conn.cut();
        true
    }

    /// Answers without running the app (shed, shutting down).
    pub(crate) fn refuse(self, e: crate::error::RequestError) {
        self.reply.send(Reply::refusal(e));
    }
}

/// Held by a connection's task: marks its `ConnInfo` ended when the task
/// ends, however it ends.
pub(crate) struct Ended(pub(crate) Arc<ConnInfo>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The app's side of `--body-timeout` sees a write that went through,
    /// and whether the last one found the socket full.
    #[test]
    fn write_progress_counts_writes_and_knows_a_full_socket() {
        let conn = ConnInfo::new(None, ServerName::new(String::new(), String::new()));
        assert_eq!(conn.write_progress(), (false, 0));
        conn.note_write(false);
        conn.note_write(false);
        assert_eq!(conn.write_progress(), (false, 2));
        conn.note_write(true);
        assert_eq!(
            conn.write_progress(),
            (true, 2),
            "a full socket is no progress"
        );
        conn.note_write(false);
        assert_eq!(conn.write_progress(), (false, 3));
    }
}
