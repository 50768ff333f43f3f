//! The clock on a connection's request heads (`--keep-alive`, `--header-timeout`), and its writes' timer.
//!
//! hyper's own `header_read_timeout` starts when hyper begins waiting for a
//! head (at accept, and again when the previous exchange is done) and stops
//! when a head is complete, so one number has to bound both the idle time
//! between requests and the time a head may take, and it closes without a
//! word. Siesta keeps the two apart. `Clock` is the per-connection state;
//! `ClockedIo` wraps the socket, sees the first byte of each head arrive and
//! enforces the deadline whenever hyper waits to read; the service
//! (`service.rs`) marks the connection busy when a head is complete, and
//! the response body (`end.rs` `Counted`) idle again when hyper is done
//! with it. A 408 is recorded in `end.rs` like every refusal. Timeline:
//!
//! - first request: its head must be complete within `--header-timeout`
//!   from the accept; if not, `408 Request Timeout`, then close. A
//!   connection that sent nothing at all is closed without a word (and
//!   without a log record), as nginx and Apache do: a client that opened it
//!   ahead of need (a pool, a browser's preconnect) and sends its request
//!   just as it closes would take a 408 for the answer to that request.
//! - between requests: `--keep-alive` of silence, then a quiet close.
//! - a later head: `--header-timeout` from its first byte, then close
//!   (no 408: the connection has already carried responses, and an answer
//!   the client did not ask for could be taken for one of them).
//!
//! Bytes of the next head that arrived while a request was busy (pipelined)
//! are in hyper's buffer: that head is timed by `--header-timeout` from the
//! end of the response (`head_begun`). The body of a request is not timed here
//! (`--body-timeout` belongs to `wsgi.input`). Writes are, by
//! `write_stall.rs`: a client that takes no response byte for
//! `--body-timeout` while hyper has bytes for it loses its connection,
//! whether or not the app is still producing.

use super::end::Recorder;
use super::framing::{BadChunk, Framing};
use super::proxy::Peek;
use super::write_stall::WriteStall;
use crate::error::RequestError;
use crate::exchange::ConnInfo;
use crate::limits::Limits;
use hyper::body::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// The answer to a head refused before hyper parsed it (a first head that
/// came too late, a request line longer than hyper's read buffer), written
/// straight to the socket; its status comes from the one table,
/// `RequestError::status`.
fn early_answer(refusal: RequestError) -> Vec<u8> {
    let status = refusal.status();
    format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes()
}

/// What hyper's read gets once `Framing` found a bad chunk line; the
/// `InvalidData` kind makes `wsgi.input` call the body malformed (400).
fn bad_chunk() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "chunk line breaks RFC 9112 7.1")
}

/// Where a connection is between two requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No byte of the next head yet, since this instant.
    Waiting { since: Instant, first: bool },
    /// The next head began arriving at this instant.
    Head { since: Instant, first: bool },
    /// A head is complete: the request is with the app and its response.
    Busy,
    /// The deadline passed: reads end the stream.
    Expired,
}

/// What happens when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnExpiry {
    Close,
    Answer408,
}

/// What `ClockedIo` found in a head's request line that hyper's parse
/// does not show (`Clock::head_note`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HeadNote {
    /// Bytes its target's escaping added (`raw_target.rs`).
    pub escaped: usize,
    /// The line held a `#` (`Framing::take_fragment`): refused.
    pub fragment: bool,
}

/// Notes of heads, by number, in order.
type HeadNotes = VecDeque<(u64, HeadNote)>;

/// One connection's head clock, shared by its `ClockedIo`, its service and its response bodies.
#[derive(Debug)]
pub(crate) struct Clock {
    phase: Mutex<Phase>,
    /// `--keep-alive`.
    keep_alive: Duration,
    /// `--header-timeout`; `None` waits forever for a head.
    header_timeout: Option<Duration>,
    /// hyper was given bytes to write that a flush has not yet seen out.
    unflushed: AtomicBool,
    /// The connection has been idle between requests long enough to rest.
    rest_due: AtomicBool,
    /// The response ended (`idle`) and no read has looked at the clock
    /// since: the keep-alive deadline is not armed yet (`ClockedIo` arms it
    /// as hyper reads). `server/`'s `drive` polls hyper once more then.
    unarmed: AtomicBool,
    /// The last read left a head begun (`Framing::in_head`): one pipelined
    /// behind a busy request is timed as a head from the response's end,
    /// not as silence (QA, session 30: it got `--keep-alive`).
    head_begun: AtomicBool,
    /// Responses done on this connection.
    served: AtomicU32,
    /// Notes of the heads whose request lines `ClockedIo` escaped or found
    /// a `#` in, which the service has not yet taken (boxed: most
    /// connections never have one).
    notes: Mutex<Option<Box<HeadNotes>>>,
    /// Whether `notes` may hold a note: the service looks no further
    /// when it does not (no lock per request).
    any_notes: AtomicBool,
}

/// How long a connection idles between requests before it comes to rest
/// (`server/`'s `drive`): long enough that a client busy on its connection
/// never pays for a new hyper connection per request (a few µs), short
/// enough that idle keep-alive connections soon hold only ~2 KiB. After its
/// first response a connection rests at once: that costs a busy client one
/// new hyper connection, and lets a burst of clients that ask once and then
/// idle hand their buffers on to the next ones, instead of each holding its
/// own for a while (which leaves the heap fragmented once they rest).
const REST_AFTER: Duration = Duration::from_millis(500);

/// How long `ClockedIo::refuse` waits for the client to take its answer.
const REFUSE_WAIT: Duration = Duration::from_secs(2);

impl Clock {
    /// A clock for a connection accepted now.
    pub(crate) fn new(keep_alive: Duration, header_timeout: Option<Duration>) -> Arc<Self> {
        Arc::new(Clock {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                first: true,
            }),
            keep_alive,
            header_timeout,
            unflushed: AtomicBool::new(false),
            rest_due: AtomicBool::new(false),
            unarmed: AtomicBool::new(false),
            head_begun: AtomicBool::new(false),
            served: AtomicU32::new(0),
            notes: Mutex::new(None),
            any_notes: AtomicBool::new(false),
        })
    }

    pub(crate) fn busy(&self) {
        *self.phase.lock() = Phase::Busy;
        self.rest_due.store(false, Ordering::Relaxed);
    }

    pub(crate) fn idle(&self) {
        let mut phase = self.phase.lock();
        if *phase == Phase::Busy {
            let since = Instant::now();
            *phase = if self.head_begun.load(Ordering::Relaxed) {
                Phase::Head {
                    since,
                    first: false,
                }
            } else {
                Phase::Waiting {
                    since,
                    first: false,
                }
            };
            self.served.fetch_add(1, Ordering::Relaxed);
            self.unarmed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the response ended with no read looking at the clock since
    /// (hyper read last while the request was busy, and waits on the
    /// socket): then hyper is to be polled once more, and its read arms the
    /// keep-alive deadline. Clears the mark.
    pub(crate) fn take_unarmed(&self) -> bool {
        self.unarmed.swap(false, Ordering::Relaxed)
    }

    /// A head's first byte came: later heads are timed from it; the first
    /// one stays timed from the accept. `now`: the time the read that
    /// brought it looked at (`past_deadline`), if it did.
    fn bytes_arrived(&self, now: Option<Instant>) {
        let mut phase = self.phase.lock();
        if let Phase::Waiting { since, first } = *phase {
            *phase = Phase::Head {
                since: if first {
                    since
                } else {
                    now.unwrap_or_else(Instant::now)
                },
                first,
            };
        }
    }

    /// When an idle connection is due to come to rest: between requests,
    /// before a byte of the next head.
    #[cfg(test)]
    fn rest_at(&self) -> Option<Instant> {
        self.rest_at_in(*self.phase.lock())
    }

    /// `rest_at` for a phase read already (`past_deadline` reads it once).
    fn rest_at_in(&self, phase: Phase) -> Option<Instant> {
        match phase {
            Phase::Waiting {
                since,
                first: false,
            } => Some(match self.served.load(Ordering::Relaxed) {
                0 | 1 => since,
                _ => since + REST_AFTER,
            }),
            _ => None,
        }
    }

    /// The deadline in force and what its expiry does; `None` when nothing
    /// is timed (busy, expired, or no `--header-timeout`).
    #[cfg(test)]
    fn deadline(&self) -> Option<(Instant, OnExpiry)> {
        self.deadline_in(*self.phase.lock())
    }

    /// `deadline` for a phase read already.
    fn deadline_in(&self, phase: Phase) -> Option<(Instant, OnExpiry)> {
        let on_expiry = |first: bool| {
            if first {
                OnExpiry::Answer408
            } else {
                OnExpiry::Close
            }
        };
        match phase {
            Phase::Waiting {
                since,
                first: false,
            } => Some((since + self.keep_alive, OnExpiry::Close)),
            // Not a byte yet: closed quietly, as a preconnected client that
            // sends its request just then would take a 408 for its answer.
            Phase::Waiting { since, first: true } => {
                self.header_timeout.map(|t| (since + t, OnExpiry::Close))
            }
            Phase::Head { since, first } => {
                self.header_timeout.map(|t| (since + t, on_expiry(first)))
            }
            Phase::Busy | Phase::Expired => None,
        }
    }

    /// Between two requests with nothing in between: the last response
    /// handed over and written out, no byte of a next head read since (part
    /// of one read while the last request was busy goes to the next hyper
    /// connection). With the
    /// body read to its end (`ConnInfo::body_done`), hyper is idle and the
    /// connection may rest (`server/`'s `drive`).
    pub(crate) fn at_rest(&self) -> bool {
        self.rest_due.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
            && matches!(*self.phase.lock(), Phase::Waiting { first: false, .. })
    }

    fn expire(&self) {
        *self.phase.lock() = Phase::Expired;
    }

    /// Notes a fact of head number `head`'s request line, kept in head
    /// order (a line escaped and with a `#` has one note of both).
    fn note(&self, head: u64, fact: impl FnOnce(&mut HeadNote)) {
        let mut notes = self.notes.lock();
        let queue = notes.get_or_insert_with(Default::default);
        let at = queue.partition_point(|&(h, _)| h < head);
        if queue.get(at).is_none_or(|&(h, _)| h != head) {
            queue.insert(at, (head, HeadNote::default()));
        }
        if let Some((_, note)) = queue.get_mut(at) {
            fact(note);
        }
        self.any_notes.store(true, Ordering::Relaxed);
    }

    /// Head number `head`'s target was escaped, which made its request
    /// line `added` bytes longer than the client sent it.
    fn note_escaped(&self, head: u64, added: usize) {
        self.note(head, |n| n.escaped = added);
    }

    /// Head number `head`'s request line holds a `#`.
    fn note_fragment(&self, head: u64) {
        self.note(head, |n| n.fragment = true);
    }

    /// What `ClockedIo` noted of head number `head`'s request line: how
    /// many bytes escaping added to it (`--limit-request-line` counts the
    /// line as the client sent it), and whether it held a `#`. Heads are
    /// taken in order: notes of earlier ones (refused before the service
    /// saw them) go with it.
    pub(crate) fn head_note(&self, head: u64) -> HeadNote {
        if !self.any_notes.load(Ordering::Relaxed) {
            return HeadNote::default();
        }
        let mut notes = self.notes.lock();
        let Some(queue) = notes.as_mut() else {
            return HeadNote::default();
        };
        while queue.front().is_some_and(|&(h, _)| h < head) {
            queue.pop_front();
        }
        let note = match queue.front() {
            Some(&(h, note)) if h == head => {
                queue.pop_front();
                note
            }
            _ => HeadNote::default(),
        };
        if queue.is_empty() {
            *notes = None;
            self.any_notes.store(false, Ordering::Relaxed);
        }
        note
    }

    /// Whether an answer written straight to the socket now would be the
    /// answer to the connection's `head`th head: every earlier one has had
    /// its response, written out, and no request is busy.
    fn answerable(&self, head: u64) -> bool {
        !self.unflushed.load(Ordering::Relaxed)
            && u64::from(self.served.load(Ordering::Relaxed)) + 1 == head
            && matches!(
                *self.phase.lock(),
                Phase::Waiting { .. } | Phase::Head { .. }
            )
    }

    #[cfg(test)]
    fn expired(&self) -> bool {
        self.phase() == Phase::Expired
    }

    /// The phase now (one lock for what a read checks).
    fn phase(&self) -> Phase {
        *self.phase.lock()
    }
}

/// The socket, as hyper sees it: reads end (EOF) once the clock's deadline
/// has passed, after a 408 when that is the answer.
pub(crate) struct ClockedIo<I> {
    io: I,
    clock: Arc<Clock>,
    /// Where a 408 is recorded (it never reaches the service).
    end: Arc<Recorder>,
    /// Armed while hyper waits for head bytes.
    timer: Option<Pin<Box<Sleep>>>,
    /// Nothing was ever written: a 408 cannot be mistaken for anything.
    wrote: bool,
    /// A head was answered here, not by hyper (`answer_early`).
    answered: bool,
    /// Every byte read goes through it first (`framing.rs`).
    framing: Framing,
    /// `--body-timeout` for the client's side of writes (`write_stall.rs`).
    stall: WriteStall,
    /// Bytes read and not yet handed to hyper (boxed: most connections
    /// never have any, and an idle one then holds only the pointer).
    spill: Option<Box<Spill>>,
    /// Told of every write: whether it went through or found the socket full.
    conn: Arc<ConnInfo>,
}

/// What `ClockedIo` has read and hyper has yet to get.
#[derive(Default)]
struct Spill {
    /// Bytes hyper had read but not used when the connection went to rest
    /// (part of a pipelined head), or that did not fit its buffer once
    /// escaped (`pass_lines`): its next reads get them first.
    replay: Bytes,
    /// The start of a request line read but not yet handed to hyper, until
    /// its LF comes (`pass_lines`).
    held: Vec<u8>,
}

impl<I> ClockedIo<I> {
    pub(crate) fn new(
        io: I,
        clock: Arc<Clock>,
        end: Arc<Recorder>,
        conn: Arc<ConnInfo>,
        limits: &Limits,
    ) -> Self {
        let read_buffer = limits.read_buffer;
        ClockedIo {
            io,
            clock,
            end,
            // Made now, next to the connection's other lasting state, not
            // after hyper's buffers (which a connection at rest frees): the
            // pages it would pin there stay resident.
            timer: Some(Box::pin(tokio::time::sleep_until(Instant::now()))),
            wrote: false,
            answered: false,
            // A request line this long leaves no room in hyper's read
            // buffer for its CRLF and the empty line that ends a head:
            // hyper would run out of room and answer 431; it gets 414 here.
            framing: Framing::with_limits(read_buffer.saturating_sub(3), limits.head.fields),
            stall: WriteStall::new(limits.body_timeout),
            spill: None,
            conn,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> ClockedIo<I> {
    /// Whether the deadline has passed (checked before reading, so a client
    /// that trickles bytes cannot keep a head open); arms the timer when not.
    /// Between requests, the timer first wakes the connection when it is
    /// due to come to rest (`Clock::at_rest`), then at the deadline. The
    /// time it read, if it did, goes to `read_at` (for `bytes_arrived`: one
    /// clock read per read of a head, not two).
    fn past_deadline(
        &mut self,
        cx: &mut Context<'_>,
        phase: Phase,
        read_at: &mut Option<Instant>,
    ) -> Option<OnExpiry> {
        let (deadline, on_expiry) = self.clock.deadline_in(phase)?;
        if self.clock.unarmed.load(Ordering::Relaxed) {
            self.clock.unarmed.store(false, Ordering::Relaxed);
        }
        let now = Instant::now();
        *read_at = Some(now);
        if now >= deadline {
            return Some(on_expiry);
        }
        let mut wake = deadline;
        if let Some(rest_at) = self.clock.rest_at_in(phase) {
            if now >= rest_at {
                self.clock.rest_due.store(true, Ordering::Relaxed);
            } else {
                wake = wake.min(rest_at);
            }
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake)));
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => None,
            Poll::Ready(()) if wake == deadline => Some(on_expiry),
            Poll::Ready(()) => {
                // Due to rest: `drive` sees it once this read is pending.
                self.clock.rest_due.store(true, Ordering::Relaxed);
                timer.as_mut().reset(deadline);
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Some(on_expiry),
                    Poll::Pending => None,
                }
            }
        }
    }

    fn expire(&mut self, cx: &mut Context<'_>, on_expiry: OnExpiry) {
        if on_expiry == OnExpiry::Answer408 && !self.wrote {
            self.answer_early(cx, RequestError::HeaderTimeout);
            return;
        }
        self.clock.expire();
        self.timer = None;
        self.conn.note_keep_alive_cut();
        crate::log::error::write(
            crate::log::error::Level::Debug,
            "Closed an idle or stalled keep-alive connection",
        );
    }

    /// Answers a head hyper never parsed with `refusal`'s status, and
    /// records it like every refusal (a request that never had a head);
    /// reads end from then on. A socket with no response in its send queue
    /// takes these few bytes at once; if it does not, the client gets the
    /// close alone.
    fn answer_early(&mut self, cx: &mut Context<'_>, refusal: RequestError) {
        self.clock.expire();
        self.timer = None;
        let _ = Pin::new(&mut self.io).poll_write(cx, &early_answer(refusal));
        self.answered(refusal);
    }

    /// A head was answered here (`answer_early`, `refuse`): recorded like
    /// every refusal (a request that never had a head).
    fn answered(&mut self, refusal: RequestError) {
        self.wrote = true;
        self.answered = true;
        self.end.refused_early(self.conn.remote_addr(), refusal);
    }
}

impl<I: Peek> ClockedIo<I> {
    /// A connection at rest, without hyper: waits for the client's next
    /// bytes (true), or closes it (false) at the keep-alive deadline or a
    /// stop. `unread` is what hyper had read and not used.
    pub(crate) fn rest<'a>(
        &'a mut self,
        unread: Bytes,
        stop: &'a mut watch::Receiver<bool>,
    ) -> impl Future<Output = bool> + 'a {
        // An empty `unread` may still hold hyper's whole read buffer: it is
        // dropped here, not kept across the wait.
        let replay = !unread.is_empty();
        if replay {
            let spill = self.spill.get_or_insert_with(Box::default);
            spill.replay = if spill.replay.is_empty() {
                unread
            } else {
                // hyper's unread bytes came before those it was yet to read.
                [&unread[..], &spill.replay[..]].concat().into()
            };
        }
        async move { replay || self.wait_at_rest(stop).await }
    }

    async fn wait_at_rest(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut stopping = std::pin::pin!(stop.wait_for(|stopped| *stopped));
        std::future::poll_fn(|cx| {
            if stopping.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            let phase = self.clock.phase();
            if let Some(on_expiry) = self.past_deadline(cx, phase, &mut None) {
                self.expire(cx, on_expiry);
                return Poll::Ready(false);
            }
            // An error or the client's close: hyper, back on, reads it.
            self.io.poll_read_ready(cx).map(|_| true)
        })
        .await
    }
}

impl<I: AsyncRead + AsyncWrite + AsRawFd + Unpin> ClockedIo<I> {
    /// A write's outcome `r` through the write stall's timer; a write it
    /// fails (the client took nothing for `--body-timeout`) gives the
    /// connection up.
    fn checked<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let pending = r.is_pending();
        let r = self.stall.check(self.io.as_raw_fd(), cx, r);
        if pending && matches!(r, Poll::Ready(Err(_))) {
            self.conn.give_up();
        }
        r
    }

    /// Whether the client still owes part of a request body: the bytes
    /// read so far end inside one.
    pub(crate) fn body_coming(&self) -> bool {
        self.framing.in_body()
    }

    /// Whether the head hyper is reading now (the one after those answered)
    /// has more field lines than `--limit-request-fields`: hyper's refusal
    /// of it as too large is for that. (One under the option but over
    /// hyper's own count, `max_headers`, stays a head too large.)
    pub(crate) fn crowded(&self) -> bool {
        let head = u64::from(self.clock.served.load(Ordering::Relaxed)) + 1;
        self.framing.crowded() == Some(head)
    }

    /// Whether a head was answered here, before hyper parsed it: the client
    /// may still be sending the rest of it.
    pub(crate) fn answered_early(&self) -> bool {
        self.answered
    }

    /// Answers a head hyper closed on without a word (an HTTP/2 preface,
    /// which hyper recognises and leaves unanswered) with `refusal`'s
    /// status, and records it like every refusal.
    pub(crate) async fn refuse(&mut self, refusal: RequestError) {
        use tokio::io::AsyncWriteExt;
        // Bounded: a client that takes nothing (earlier responses still
        // fill the socket) gets the close alone.
        let answer = early_answer(refusal);
        let _ = tokio::time::timeout(REFUSE_WAIT, self.io.write_all(&answer)).await;
        self.answered(refusal);
    }

    /// Closes a connection whose response was given up on or failed part
    /// way, always with a reset: the response is cut short, and a FIN would
    /// pass for its end where the body is delimited by the close (HTTP/1.0).
    /// What the kernel already holds for the client goes first, while the
    /// client takes it (no FIN is queued, so an empty queue means all of it
    /// was acknowledged); a client that takes nothing of it for `wait` is
    /// reset at once, not left waiting behind bytes it is not taking.
    /// A stop whose time is up (`abort`) ends the wait at once: the worker
    /// is about to go, and its close would send nothing while a process the
    /// app forked holds a copy of the socket.
    pub(crate) async fn cut(self, wait: Duration, abort: &mut watch::Receiver<bool>) {
        let fd = self.io.as_raw_fd();
        // Set first: should this task be dropped during the wait, its close
        // resets too.
        super::write_stall::reset_on_close(fd);
        tokio::select! {
            _ = taken(fd, wait) => {}
            _ = abort.wait_for(|aborted| *aborted) => {}
        }
        super::write_stall::reset_now(fd);
    }

    /// Closes the connection hyper is done with (hyper has flushed what it
    /// had and usually shut the write side down already). With `linger`, a
    /// client still sending a body the response did not wait for (an early
    /// 413) has what it sends read and discarded, within the bound, until it
    /// closes too. Closed at once, with those bytes arriving, the socket
    /// would answer with a reset, which can reach the client (or a proxy in
    /// front) before it has read the response: the response is lost, and
    /// nginx answers 502. Past the bound the socket is closed (with a reset
    /// if bytes are still arriving) only once the client has taken the
    /// response, or has taken nothing of it for `linger.time`: a reset drops
    /// what the kernel still had to send.
    pub(crate) async fn close(mut self, linger: Option<Linger>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.io.shutdown().await.is_err() {
            return;
        }
        let Some(linger) = linger else {
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        let mut seen = 0u64;
        let discard = tokio::time::timeout(linger.time, async {
            while seen < linger.bytes {
                match self.io.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => seen += n as u64,
                }
            }
            false
        });
        if matches!(discard.await, Ok(true)) {
            return; // the client closed: nothing arrives to reset the socket
        }
        taken(self.io.as_raw_fd(), linger.time).await;
    }
}

/// Waits until the client has taken everything in socket `fd`'s send
/// queue (true), or took nothing of it for `wait` (false).
async fn taken(fd: std::os::fd::RawFd, wait: Duration) -> bool {
    let mut left = super::write_stall::queued(fd);
    let mut since = tokio::time::Instant::now();
    while left > 0 {
        if since.elapsed() >= wait {
            return false;
        }
        tokio::time::sleep(LINGER_POLL).await;
        let now = super::write_stall::queued(fd);
        if now < left {
            since = tokio::time::Instant::now();
        }
        left = now;
    }
    true
}

/// How often a closing connection looks whether the client has taken the
/// rest of the response.
const LINGER_POLL: Duration = Duration::from_millis(50);

/// How long, and for how many bytes, a lingering close waits for the
/// client's own close (`ClockedIo::close`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    pub(crate) time: Duration,
    pub(crate) bytes: u64,
}

impl<I> ClockedIo<I> {
    /// Whether the bytes just read need `pass_lines`: a request line in
    /// them is still open, or ended after being held, or holds raw bytes.
    fn lines_to_pass(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| !s.held.is_empty())
            || self.framing.open_line().is_some()
            || !self.framing.high_lines().is_empty()
    }

    /// Hands hyper the bytes just read (`buf` past `before`, after those
    /// `held` back), each request line whole: an open one is held back
    /// until its LF comes (unless hyper already has its start), so that a
    /// target with raw bytes that are not UTF-8 can be escaped
    /// (`raw_target.rs`). What no longer fits in `buf` is read next, from
    /// `replay`. Returns whether any bytes were given (none when all of them
    /// were held), and the first head whose line, escaped, no longer fits
    /// hyper's buffer (hyper would answer it 431).
    fn pass_lines(&mut self, buf: &mut ReadBuf<'_>, before: usize) -> (bool, Option<u64>) {
        let mut region = self.take_held();
        let offset = region.len();
        region.extend_from_slice(&buf.filled()[before..]);
        buf.set_filled(before);
        let mut lines = Vec::new();
        if let (Some((end, head)), true) = (self.framing.continued_end(), offset > 0) {
            lines.push((0..offset + end, head)); // the held line, ended now
        }
        lines.extend(
            self.framing
                .high_lines()
                .iter()
                .map(|(r, head)| (r.start + offset..r.end + offset, *head)),
        );
        let cut = match self.framing.open_line() {
            // Past the head buffer and not answered (`take_overlong`): hyper
            // gets it, and bounds it.
            Some(_) if self.framing.line_past_max() => region.len(),
            // A line no method can start (a TLS ClientHello sent to a plain
            // HTTP port, say): hyper refuses it at once, with no LF to wait
            // for (which might only come at --header-timeout).
            Some(Some(from))
                if !region
                    .get(offset + from)
                    .is_some_and(|b| super::framing::is_tchar(*b)) =>
            {
                region.len()
            }
            Some(Some(from)) => offset + from,
            Some(None) if offset > 0 => 0,
            // Begun in bytes hyper already has: it gets the rest too.
            Some(None) | None => region.len(),
        };
        let mut out = Vec::with_capacity(cut + 64);
        let mut at = 0;
        let mut overgrown = None;
        for (line, head) in lines {
            if let Some(escaped) = super::raw_target::encoded(&region[line.clone()]) {
                if escaped.len() >= self.framing.line_max() {
                    overgrown = overgrown.or(Some(head));
                }
                out.extend_from_slice(&region[at..line.start]);
                self.clock.note_escaped(head, escaped.len() - line.len());
                out.extend_from_slice(&escaped);
                at = line.end;
            }
        }
        out.extend_from_slice(&region[at..cut]);
        // The rest stays held, moved rather than copied (a line trickled
        // byte by byte is not copied again at each read).
        region.drain(..cut);
        let given = self.give(buf, out);
        if !region.is_empty() {
            self.spill.get_or_insert_with(Box::default).held = region;
        } else if self.spill.as_ref().is_some_and(|s| s.replay.is_empty()) {
            self.spill = None; // an idle connection holds none
        }
        (given, overgrown)
    }

    /// The start of a request line held back, taken out.
    fn take_held(&mut self) -> Vec<u8> {
        self.spill
            .as_mut()
            .map(|s| std::mem::take(&mut s.held))
            .unwrap_or_default()
    }

    /// Puts `bytes` in `buf`, and what does not fit in `replay` (empty
    /// until then: reads come from the socket only once it is); whether any
    /// bytes were given.
    fn give(&mut self, buf: &mut ReadBuf<'_>, bytes: Vec<u8>) -> bool {
        let fits = bytes.len().min(buf.remaining());
        buf.put_slice(&bytes[..fits]);
        if fits < bytes.len() {
            self.spill.get_or_insert_with(Box::default).replay = Bytes::from(bytes).slice(fits..);
        }
        fits > 0
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClockedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.clock.phase();
        if phase == Phase::Expired {
            return Poll::Ready(Ok(()));
        }
        let mut read_at = None;
        if let Some(on_expiry) = this.past_deadline(cx, phase, &mut read_at) {
            this.expire(cx, on_expiry);
            return Poll::Ready(Ok(()));
        }
        if let Some(spill) = this.spill.as_mut().filter(|s| !s.replay.is_empty()) {
            // Already seen by the framing and the clock when first read
            // (before any chunk line that broke: those bytes come first).
            let n = spill.replay.len().min(buf.remaining());
            buf.put_slice(&spill.replay.split_to(n));
            if spill.replay.is_empty() && spill.held.is_empty() {
                this.spill = None;
            }
            return Poll::Ready(Ok(()));
        }
        if this.framing.broken() {
            return Poll::Ready(Err(bad_chunk()));
        }
        let before = buf.filled().len();
        loop {
            let read = Pin::new(&mut this.io).poll_read(cx, buf);
            if !matches!(read, Poll::Ready(Ok(()))) {
                return read;
            }
            if buf.filled().len() == before {
                // The client's close: hyper gets the held start of a line
                // first (escaped like a whole one, when it can be).
                let held = this.take_held();
                let held = super::raw_target::encoded(&held).unwrap_or(held);
                this.give(buf, held);
                return read;
            }
            let heads = this.framing.heads();
            let fed = this.framing.feed(&buf.filled()[before..]);
            if let Some(head) = this.framing.take_fragment() {
                this.clock.note_fragment(head);
            }
            let begun = this.framing.in_head();
            if this.clock.head_begun.load(Ordering::Relaxed) != begun {
                this.clock.head_begun.store(begun, Ordering::Relaxed);
            }
            if let Some(n) = this.framing.read_through() {
                this.conn.note_read_through(n);
            }
            // Only a next head's bytes start its clock: body bytes hyper
            // takes after the response (an unread body, drained) leave an
            // idle connection timed by `--keep-alive`. A head begun while
            // the last request was busy starts it with its next bytes.
            if heads.is_none() || this.framing.heads() != heads || this.framing.in_head() {
                this.clock.bytes_arrived(read_at);
            }
            if let Some(head) = this.framing.take_overlong() {
                if this.clock.answerable(head) {
                    // hyper gets none of these bytes: it sees the stream end.
                    buf.set_filled(before);
                    let refusal = if this.framing.overlong_was_blank() {
                        RequestError::MalformedHead
                    } else {
                        RequestError::RequestLineTooLong
                    };
                    this.answer_early(cx, refusal);
                    return Poll::Ready(Ok(()));
                }
                // Behind a response still under way: its bytes go on to
                // hyper, which answers 431 in turn, unless a later read
                // finds it answerable first (the mark comes again).
            }
            if let Some(head) = this.framing.take_huge() {
                if this.clock.answerable(head) {
                    // A body longer than hyper can frame: 413, where hyper
                    // would call the head too large (431). Behind a
                    // response still under way, hyper's 431 it is.
                    buf.set_filled(before);
                    this.spill = None;
                    this.answer_early(cx, RequestError::LengthTooLarge);
                    return Poll::Ready(Ok(()));
                }
            }
            let bad = fed.err().map(|BadChunk(at)| at);
            if let Some(at) = bad {
                // hyper gets the bytes before the bad one (its head and the
                // good chunks; a held line's start first), then the error
                // on its next read.
                buf.set_filled(before + at);
            }
            if this.lines_to_pass() {
                let (given, overgrown) = this.pass_lines(buf, before);
                if overgrown.is_some_and(|head| this.clock.answerable(head)) {
                    // Escaped, its line passes hyper's buffer: 414, as for
                    // a line that long as sent.
                    buf.set_filled(before);
                    this.spill = None;
                    this.answer_early(cx, RequestError::RequestLineTooLong);
                    return Poll::Ready(Ok(()));
                }
                if !given && bad.is_none() {
                    // All of it held: read on, until the socket has no more
                    // (its pending read wakes this task) or the line ends.
                    // The line's bound (`take_overlong`) bounds the loop.
                    continue;
                }
            }
            if bad.is_some() && buf.filled().len() == before {
                return Poll::Ready(Err(bad_chunk()));
            }
            return read;
        }
    }
}

impl<I: AsyncRead + AsyncWrite + AsRawFd + Unpin> AsyncWrite for ClockedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote = true;
        this.clock.unflushed.store(true, Ordering::Relaxed);
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        if !matches!(r, Poll::Ready(Err(_))) {
            this.conn.note_write(r.is_pending());
        }
        this.checked(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote = true;
        this.clock.unflushed.store(true, Ordering::Relaxed);
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if !matches!(r, Poll::Ready(Err(_))) {
            this.conn.note_write(r.is_pending());
        }
        this.checked(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes its socket only once its own buffer is empty.
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.clock.unflushed.store(false, Ordering::Relaxed);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phases_and_deadlines() {
        let ka = Duration::from_secs(5);
        let ht = Duration::from_secs(30);
        let clock = Clock::new(ka, Some(ht));
        let start = Instant::now();
        // Nothing sent yet: a quiet close; a head begun: a 408.
        assert_eq!(clock.deadline(), Some((start + ht, OnExpiry::Close)));
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.bytes_arrived(None);
        // The first head stays timed from the accept.
        assert_eq!(clock.deadline(), Some((start + ht, OnExpiry::Answer408)));
        clock.busy();
        assert_eq!(clock.deadline(), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        clock.idle();
        let idle = Instant::now();
        assert_eq!(clock.deadline(), Some((idle + ka, OnExpiry::Close)));
        tokio::time::advance(Duration::from_secs(2)).await;
        clock.bytes_arrived(None);
        assert_eq!(
            clock.deadline(),
            Some((Instant::now() + ht, OnExpiry::Close))
        );
        clock.bytes_arrived(None); // later bytes of the same head do not move it
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            clock.deadline(),
            Some((idle + Duration::from_secs(2) + ht, OnExpiry::Close))
        );
        clock.expire();
        assert_eq!(clock.deadline(), None);
        clock.idle(); // a late body drop does not revive an expired clock
        assert!(clock.expired());
    }

    #[tokio::test(start_paused = true)]
    async fn rest_at_once_after_a_first_response_then_after_a_pause() {
        let clock = Clock::new(Duration::from_secs(5), None);
        assert_eq!(clock.rest_at(), None, "no request yet");
        clock.busy();
        assert_eq!(clock.rest_at(), None, "busy");
        clock.idle();
        assert_eq!(clock.rest_at(), Some(Instant::now()));
        assert!(!clock.at_rest(), "not yet due");
        clock.rest_due.store(true, Ordering::Relaxed);
        assert!(clock.at_rest());
        clock.unflushed.store(true, Ordering::Relaxed);
        assert!(!clock.at_rest(), "bytes still to write");
        clock.unflushed.store(false, Ordering::Relaxed);
        clock.busy();
        assert!(!clock.at_rest(), "a new request clears the rest");
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.idle();
        assert_eq!(clock.rest_at(), Some(Instant::now() + REST_AFTER));
        clock.rest_due.store(true, Ordering::Relaxed);
        clock.bytes_arrived(None);
        assert_eq!(clock.rest_at(), None, "a head is coming");
        assert!(!clock.at_rest());
    }

    #[tokio::test]
    async fn head_notes_are_taken_per_head_in_order() {
        let clock = Clock::new(Duration::from_secs(5), None);
        let escaped = |n| HeadNote {
            escaped: n,
            fragment: false,
        };
        assert_eq!(clock.head_note(1), HeadNote::default());
        clock.note_escaped(1, 10);
        clock.note_fragment(4);
        clock.note_escaped(2, 20);
        clock.note_escaped(4, 40);
        assert_eq!(clock.head_note(1), escaped(10));
        assert_eq!(clock.head_note(2), escaped(20));
        assert_eq!(clock.head_note(3), HeadNote::default());
        assert_eq!(
            clock.head_note(5),
            HeadNote::default(),
            "head 4 never reached the service"
        );
        assert!(
            clock.notes.lock().is_none(),
            "nothing kept once all are taken"
        );
        clock.note_fragment(6);
        clock.note_escaped(6, 3);
        assert_eq!(
            clock.head_note(6),
            HeadNote {
                escaped: 3,
                fragment: true
            }
        );
    }

    #[test]
    fn answer_is_a_408() {
        let answer = early_answer(RequestError::HeaderTimeout);
        assert!(answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
        let answer = early_answer(RequestError::RequestLineTooLong);
        assert!(answer.starts_with(b"HTTP/1.1 414 URI Too Long\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_while_busy_is_timed_as_a_head() {
        let clock = Clock::new(Duration::from_secs(5), Some(Duration::from_secs(30)));
        clock.busy();
        clock.head_begun.store(true, Ordering::Relaxed);
        clock.idle();
        let now = Instant::now();
        let thirty = Duration::from_secs(30);
        assert_eq!(clock.deadline(), Some((now + thirty, OnExpiry::Close)));
        assert!(!clock.at_rest(), "a head is coming");
        clock.busy();
        clock.head_begun.store(false, Ordering::Relaxed);
        clock.idle();
        let five = Duration::from_secs(5);
        assert_eq!(
            clock.deadline(),
            Some((now + five, OnExpiry::Close)),
            "silence"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_header_timeout_still_bounds_idle() {
        let clock = Clock::new(Duration::from_secs(5), None);
        assert_eq!(clock.deadline(), None);
        clock.busy();
        clock.idle();
        assert!(clock.deadline().is_some());
        clock.bytes_arrived(None);
        assert_eq!(clock.deadline(), None);
    }
}

#[cfg(test)]
mod size {
    /// A connection's `ClockedIo` and `Clock` last its whole life, at rest
    /// too, so each byte here is one per idle connection (S8 in `bench/`).
    /// Session 16's additions grew `ClockedIo` by 120 bytes unnoticed; rare
    /// state (held lines, replayed bytes, a write stall) is boxed instead.
    /// Session 20's field count per head (`Framing`, 16 bytes) was made
    /// room for by holding two `Option<u64>` as a value and a flag. (A
    /// debug build's `TcpStream` is 8 bytes larger: `cargo test` measures
    /// that one.)
    #[test]
    fn what_an_idle_connection_keeps_stays_small() {
        let io = std::mem::size_of::<super::ClockedIo<tokio::net::TcpStream>>();
        let clock = std::mem::size_of::<super::Clock>();
        assert!(io <= 272, "ClockedIo is {io} bytes");
        assert!(clock <= 96, "Clock is {clock} bytes");
    }
}
