//! The end of every request, answered by the app or refused by the server: one place.
//!
//! `Recorder` is the `Finish` handler every `Record` is made with (see
//! `exchange/record.rs`): when a request's last holder lets go, its status,
//! bytes, duration and refusal reason arrive here once, and here the access
//! log line is written, refusals get their error-log line with the peer,
//! and the metrics are counted (`metrics::finished`, StatsD). `Counted` wraps each response body
//! so the bytes hyper takes are added to the record. Heads hyper refuses
//! before the service sees them come through `refused_by_hyper`.

use super::head_clock::Clock;
use crate::error::RequestError;
use crate::exchange::chunks::Chunks;
use crate::exchange::record::{Finish, Finished, Record, Start, Tally};
use crate::exchange::reply::ResponseBody;
use crate::exchange::ConnInfo;
use crate::log::access::{AccessLog, Entry};
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};

/// Where finished requests are accounted for.
pub(crate) struct Recorder {
    /// `--access-logfile`; `None` logs nothing.
    access_log: Option<AccessLog>,
    /// Requests finished that were the app's (`Finished::start`).
    served: AtomicU64,
    /// Requests started that are the app's: the one that reaches
    /// `recycle_at` is the worker's last (`starts`).
    started: AtomicU64,
    /// `--max-requests` plus this worker's jitter: the request started as
    /// this count is the last, and `leave` fires once it is done (`u64::MAX`:
    /// never, or fired already); set again by `recycle_later`.
    recycle_at: AtomicU64,
    /// Fired when the worker should end and be replaced (`leave_due`); the
    /// flags below say why, and each stays set until `leave_due` takes it.
    leave: Notify,
    /// Why it fired: the last request before `--max-requests` is done.
    due: std::sync::atomic::AtomicBool,
    /// Why it fired: a listening socket broke (else `--max-requests`).
    listener_failed: std::sync::atomic::AtomicBool,
    /// Why it fired: a hook set gunicorn's `worker.alive = False` (`retire`).
    retired: std::sync::atomic::AtomicBool,
    /// The request reaching `recycle_at` has started; cleared when
    /// recycling is held (`recycle_later`).
    last: std::sync::atomic::AtomicBool,
    /// The worker is leaving (`leaving`): that request started while the
    /// master did not hold recycling, or a hook's retire came. Cleared when
    /// recycling is held after all (`resume`).
    closing: std::sync::atomic::AtomicBool,
    /// True while the worker takes no new connection (`closing`): the
    /// other workers, or its replacement, take them (`accept.rs`).
    pause: watch::Sender<bool>,
    /// The worker's master (`None`: a worker of its own, in tests).
    master: Option<Box<dyn Master>>,
    /// The worker's stop has begun (`stop_begun`): a last request then is
    /// no news.
    stopping: std::sync::atomic::AtomicBool,
    /// When the last request started, while the worker pauses for it
    /// (it asked its master to replace it, `Master::replace_me`, and has
    /// not resumed since).
    last_at: parking_lot::Mutex<Option<Instant>>,
}

/// What the worker finds as it looks at its pause for its last request
/// (`Recorder::look_while_leaving`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// The master holds recycling: the worker stays (`resume`).
    Held,
    /// The last request has run `--graceful-timeout`: the worker's stop
    /// begins now, and cuts it if it runs as long again (a stream that
    /// never ends would keep the worker beside its replacement for good).
    Overdue,
}

/// What the worker's master holds, and is told, about recycling (the
/// heartbeat file: `worker/heartbeat.rs`).
pub(crate) trait Master: Send + Sync {
    /// Whether the master holds recycling now (a reload was given up): the
    /// last request then neither pauses nor closes (`starts`).
    fn holds_recycling(&self) -> bool;

    /// The last request has started: the master starts the replacement
    /// now, which takes the connections while that request runs.
    fn replace_me(&self);

    /// Whether the master took back the word `replace_me` gave (it does
    /// while it holds recycling).
    fn took_back(&self) -> bool;

    /// The worker's first request has finished (`heartbeat::served`).
    fn served_first(&self);
}

impl Recorder {
    pub(crate) fn new(
        access_log: Option<AccessLog>,
        recycle_at: Option<u64>,
        master: Option<Box<dyn Master>>,
    ) -> Recorder {
        Recorder {
            access_log,
            served: AtomicU64::new(0),
            started: AtomicU64::new(0),
            recycle_at: AtomicU64::new(recycle_at.unwrap_or(u64::MAX)),
            leave: Notify::new(),
            due: std::sync::atomic::AtomicBool::new(false),
            listener_failed: std::sync::atomic::AtomicBool::new(false),
            retired: std::sync::atomic::AtomicBool::new(false),
            last: std::sync::atomic::AtomicBool::new(false),
            closing: std::sync::atomic::AtomicBool::new(false),
            pause: watch::Sender::new(false),
            master,
            stopping: std::sync::atomic::AtomicBool::new(false),
            last_at: parking_lot::Mutex::new(None),
        }
    }

    /// Turns true while the worker is leaving and takes no new connection
    /// (`accept.rs`), false again if the master holds recycling (`resume`).
    pub(crate) fn paused(&self) -> watch::Receiver<bool> {
        self.pause.subscribe()
    }

    /// Whether the worker is leaving: it accepts no new connection, and
    /// every response starting now closes its connection, so that a
    /// keep-alive client takes its next request to another worker, as
    /// gunicorn's once `worker.alive` is false. gunicorn's `worker.alive`
    /// reads false from then.
    pub(crate) fn leaving(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The worker's stop has begun (a signal's, or its own leave).
    pub(crate) fn stop_begun(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the worker's stop has begun (`stop_begun`).
    pub(crate) fn stopped(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// While the worker pauses to leave for its last request, what it
    /// finds (`Pause`), if anything: the master holds recycling, or the
    /// request has run `own` (`--graceful-timeout`). The state is looked at,
    /// not news of it: if the master took back the word the worker gave as
    /// that request started (under a hold that has ended since, or that
    /// came as the word was said), the worker says it again, so that it is
    /// replaced while that request runs.
    pub(crate) fn look_while_leaving(&self, own: Duration) -> Option<Pause> {
        if !self.leaving() || self.stopped() {
            return None;
        }
        if self.master.as_ref().is_some_and(|m| m.holds_recycling()) {
            return Some(Pause::Held);
        }
        let started = *self.last_at.lock();
        let started = started?;
        if started.elapsed() >= own {
            return Some(Pause::Overdue);
        }
        if let Some(m) = self.master.as_ref().filter(|m| m.took_back()) {
            m.replace_me();
        }
        None
    }

    /// The master holds recycling: the worker stays, and accepts again.
    /// Called before `recycle_later`, so no new last request starts between.
    pub(crate) fn resume(&self) {
        *self.last_at.lock() = None;
        self.set_leaving(false);
    }

    /// Sets `closing`, and the accept pause with it (under the watch's
    /// lock: whichever writer comes last, the pause ends as `closing` is).
    /// A worker that pauses shows as draining (`/status`, `/readyz`): it
    /// takes nothing new. One that resumes is ready again by the leave's
    /// task (`worker/mod.rs`), unless a stop came meanwhile.
    fn set_leaving(&self, leaving: bool) {
        self.closing.store(leaving, Ordering::Relaxed);
        let changed = self.pause.send_if_modified(|paused| {
            let now = self.closing.load(Ordering::Relaxed);
            std::mem::replace(paused, now) != now
        });
        if changed && leaving {
            crate::metrics::worker_draining();
        }
    }

    pub(crate) fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// Requests finished so far that were the app's (not refused before it).
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Requests started that are the app's, the ones running too.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// `--max-requests` came while the master holds recycling: the
    /// request started `every` requests on is the last again.
    pub(crate) fn recycle_later(&self, every: u64) {
        // Cleared first: while `recycle_at` is still `u64::MAX`, no start
        // can set it again in between.
        self.last.store(false, Ordering::Relaxed);
        let at = self.started().saturating_add(every.max(1));
        self.recycle_at.store(at, Ordering::Relaxed);
    }

    /// Resolves once this worker should end and be replaced, with the
    /// reason (an `EXIT_REASONS` name): it has served `--max-requests`, a
    /// listening socket failed for good (`listener_failed`), or a hook asked
    /// (`retire`).
    pub(crate) async fn leave_due(&self) -> &'static str {
        // The flags, not the wakes, say what is due: two causes may come
        // with one wake, or one cause with two (the Notify keeps a permit
        // for a wake that came while the reason was being read). A cause
        // not acted on (a hook's retire, held) leaves the others standing.
        loop {
            if self.listener_failed.load(Ordering::Relaxed) {
                return "listener_failed";
            } else if self.retired.swap(false, Ordering::Relaxed) {
                return "hook";
            } else if self.due.swap(false, Ordering::Relaxed) {
                return "max_requests";
            }
            self.leave.notified().await;
        }
    }

    /// A hook set gunicorn's `worker.alive = False`: the worker ends after
    /// the requests it has, and is replaced, as after `--max-requests`.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.set_leaving(true);
        self.leave.notify_one();
    }

    /// A listening socket cannot accept any more (closed under the worker,
    /// say): the worker ends, and its replacement gets the master's.
    pub(crate) fn listener_failed(&self) {
        self.listener_failed.store(true, Ordering::Relaxed);
        self.leave.notify_one();
    }
}

impl Finish for Recorder {
    fn starts(&self) -> Start {
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        // Reached or passed (requests starting on several threads): one is
        // the last; `recycle_later` clears `last` for the next.
        let last = n >= self.recycle_at.load(Ordering::Relaxed)
            && !self.last.swap(true, Ordering::Relaxed);
        // From here the worker takes no new connection (a client that
        // reconnects at once after this response goes to another worker,
        // or to the replacement the master starts now), and leaves once this
        // request is done: not before, whatever finishes meanwhile, so that
        // it has its own time and not the stop's, up to `--graceful-timeout`
        // (`Pause::Overdue`): then the stop's. Unless the master holds
        // recycling: the leave is due all the same, and held then
        // (`recycle_later`).
        if last
            && !self.stopping.load(Ordering::Relaxed)
            && !self.master.as_ref().is_some_and(|m| m.holds_recycling())
        {
            self.set_leaving(true);
            *self.last_at.lock() = Some(Instant::now());
            if let Some(m) = &self.master {
                m.replace_me();
            }
            // gunicorn's line, as its worker writes it: as the last request
            // starts.
            crate::log::error::info("Autorestarting worker after current request.");
        }
        Start { last }
    }

    fn closing(&self) -> bool {
        self.leaving()
    }

    fn finish(&self, done: &Finished<'_>) {
        if let Some(e) = done.tally.refusal {
            log_refusal(done, e);
        }
        crate::metrics::finished(&crate::metrics::Ended {
            track: done.track,
            method: done.head.map(|h| &h.method),
            status: done.tally.status,
            sent: done.tally.sent,
            refusal: done.tally.refusal,
            aborted: done.tally.aborted,
            elapsed: done.elapsed,
        });
        crate::metrics::statsd::request(done.tally.status, done.elapsed);
        if let Some(start) = done.start {
            if self.served.fetch_add(1, Ordering::Relaxed) == 0 {
                if let Some(master) = &self.master {
                    master.served_first();
                }
            }
            if start.last {
                // `recycle_later` sets the next.
                self.recycle_at.store(u64::MAX, Ordering::Relaxed);
                self.due.store(true, Ordering::Relaxed);
                self.leave.notify_one();
            }
        }
        if let Some(log) = &self.access_log {
            log.write(&Entry {
                head: done.head,
                peer: done.peer,
                status: done.tally.status,
                sent: done.tally.sent,
                at: SystemTime::now(),
                elapsed: done.elapsed,
                response: done.response_headers,
                refused: done.tally.refusal.is_some_and(RequestError::for_head),
            });
        }
    }

    fn keeps_response_headers(&self) -> bool {
        self.access_log
            .as_ref()
            .is_some_and(AccessLog::wants_response_headers)
    }
}

/// Refusals are the client's doing (or load): a line with the peer. A
/// request that breaks the protocol or a head limit is a warning, as
/// gunicorn's `Invalid request from ip=...` lines; a client that was slow,
/// went away or came at a busy or stopping server is an info line. App
/// failures are logged with their traceback where they happen.
fn log_refusal(done: &Finished<'_>, e: RequestError) {
    use crate::log::error::Level;
    if matches!(e, RequestError::AppFailed) {
        return;
    }
    let level = match e {
        RequestError::NoResponse => Level::Error,
        RequestError::StopCut | RequestError::MalformedBody => Level::Warning,
        _ if e.for_head() => Level::Warning,
        _ => Level::Info,
    };
    if !crate::log::error::enabled(level) {
        return;
    }
    let peer = done.peer.map_or_else(|| "-".to_string(), |p| p.to_string());
    let what = done.head.map_or_else(
        || "request".to_string(),
        |h| {
            let method = crate::log::shortened(h.method.as_str());
            format!("{method} {}", crate::log::shortened(&h.uri.to_string()))
        },
    );
    let reason = e.reason();
    if e == RequestError::StopCut && done.tally.aborted {
        // Its head may have gone out with the app's status: the response
        // was cut, not answered by the server.
        let (status, sent) = (done.tally.status, done.tally.sent);
        crate::log::error::write(
            level,
            &format!(
                "Response {status} to {what} for {peer} cut after {sent} body bytes: \
                 the stop's time ran out (--graceful-timeout, or INT/QUIT) [{reason}]"
            ),
        );
        return;
    }
    let status = e.status().as_u16();
    crate::log::error::write(
        level,
        &format!("{status} {what} from {peer}: {e} [{reason}]"),
    );
}

impl Recorder {
    /// A head hyper refused while parsing (it already sent the status):
    /// whether `err` was one.
    pub(crate) fn refused_by_hyper(
        &self,
        peer: Option<SocketAddr>,
        err: &hyper::Error,
        crowded: bool,
    ) -> bool {
        let refusal = hyper_refusal(err, crowded);
        if let Some(refusal) = refusal {
            self.refused_early(peer, refusal);
        }
        refusal.is_some()
    }

    /// A refusal answered before there was a head to make a `Record` of.
    pub(crate) fn refused_early(&self, peer: Option<SocketAddr>, refusal: RequestError) {
        self.finish(&Finished {
            head: None,
            peer,
            tally: Tally {
                status: refusal.status().as_u16(),
                sent: 0,
                refusal: Some(refusal),
                aborted: false,
            },
            elapsed: Duration::ZERO,
            track: None,
            start: None,
            response_headers: None,
        });
    }
}

/// Which refusal hyper answered for a parse error, if it answered one
/// (hyper's `on_error`: 431 for a head too large, 414 for a URI too long,
/// 400 for the other parse errors). `crowded`: the head had more field
/// lines than `--limit-request-fields` allows, which hyper refuses as too
/// large.
fn hyper_refusal(err: &hyper::Error, crowded: bool) -> Option<RequestError> {
    if !err.is_parse() {
        return None;
    }
    if err.is_parse_too_large() {
        // hyper's public API does not tell its two "too large" kinds apart
        // except through the message.
        if err.to_string().contains("URI too long") {
            return Some(RequestError::RequestLineTooLong);
        }
        return Some(if crowded {
            RequestError::TooManyFields
        } else {
            RequestError::HeadTooLarge
        });
    }
    if err.is_parse_version_h2() {
        return None;
    }
    Some(RequestError::MalformedHead)
}

/// A response body that adds the bytes hyper takes to the request's record.
/// Dropped before its end (the client went away, the connection was cut),
/// it marks the record aborted.
/// Dropped (hyper is done with it), it also marks the connection idle for
/// its head clock.
pub(crate) struct Counted {
    body: ResponseBody,
    record: Arc<Record>,
    ended: bool,
    clock: Arc<Clock>,
    /// The body's failure, held back one poll: hyper drops its write
    /// buffer when a body fails, so it first gets a turn to flush what the
    /// body gave before (a stream the app cut short, a file shorter than
    /// declared: the client gets those bytes, then the abort).
    failed: Option<std::io::Error>,
}

impl Counted {
    pub(crate) fn new(body: ResponseBody, record: Arc<Record>, clock: Arc<Clock>) -> Counted {
        Counted {
            ended: body.is_end_stream(),
            body,
            record,
            clock,
            failed: None,
        }
    }

    /// The response ends short of its end: by the stop's cut once the
    /// stop's time ran out (the request is then lost, and said so), else
    /// by its client or the app.
    fn cut_short(&self) {
        let by_stop = crate::server::stop_cut().then_some(RequestError::StopCut);
        self.record.aborted(by_stop);
    }

    /// Logs the cut if the connection was given up for `--body-timeout`
    /// (and it was not logged yet).
    fn tell_given_up(&self) {
        if self.record.conn.tell_given_up() {
            let what = format!(
                "Response to {} {}",
                crate::log::shortened(self.record.head.method.as_str()),
                crate::log::shortened(&self.record.head.uri.to_string())
            );
            given_up(&what, &self.record.conn, Some(self.record.tally().sent));
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.clock.idle();
        let status = self.record.tally().status;
        let bodiless = self.record.is_head() || status < 200 || matches!(status, 204 | 205 | 304);
        if !self.ended && !bodiless {
            self.cut_short();
            self.tell_given_up();
        }
    }
}

/// A response cut because its client took none of it for `--body-timeout`:
/// one info line, beside the access log's (which has the status the app
/// gave and the bytes handed over). `sent`: the bytes of the body handed
/// to the connection, when the response was still going (else a response
/// already handed over whole waited in the connection's buffers).
pub(crate) fn given_up(what: &str, conn: &ConnInfo, sent: Option<u64>) {
    if !crate::log::error::enabled(crate::log::error::Level::Info) {
        return;
    }
    let after = sent.map_or_else(String::new, |n| format!(" after {n} body bytes"));
    crate::log::error::info(&format!(
        "{what} for {} cut{after}: the client took no byte of it \
         within --body-timeout",
        peer(conn)
    ));
}

/// Says why a response was cut short of its declared length (its client
/// sees a broken response and the access log a normal line).
pub(crate) fn tell_cut(record: &Record, why: &str) {
    crate::log::error::info(&format!(
        "Response to {} {} for {} cut {why}",
        crate::log::shortened(record.head.method.as_str()),
        crate::log::shortened(&record.head.uri.to_string()),
        peer(&record.conn),
    ));
}

/// The connection's peer as the cut lines name it (`-` when unknown).
fn peer(conn: &ConnInfo) -> String {
    conn.remote_addr()
        .map_or_else(|| "-".to_string(), |p| p.to_string())
}

impl Body for Counted {
    type Data = Chunks;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunks>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = polled {
            this.ended = true;
            this.cut_short();
            this.tell_given_up();
            if matches!(this.body, ResponseBody::File(_)) {
                // A file that shrank under its declared length, or could not
                // be read: the client gets a cut response, so say why (an
                // app's own failures are logged with their tracebacks).
                let sent = this.record.tally().sent;
                tell_cut(&this.record, &format!("after {sent} body bytes: {e}"));
            }
            this.failed = Some(e);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.record.sent(d.remaining() as u64);
                }
                this.ended = this.body.is_end_stream();
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(r: &Recorder, start: Start) {
        r.finish(&Finished {
            head: None,
            peer: None,
            tally: Tally::default(),
            elapsed: Duration::ZERO,
            track: None,
            response_headers: None,
            start: Some(start),
        });
    }

    fn start(closes: bool, last: bool) -> (bool, Start) {
        (closes, Start { last })
    }

    /// How a request starts, with whether its response would close.
    fn starts(r: &Recorder) -> (bool, Start) {
        let s = r.starts();
        (r.closing(), s)
    }

    /// A master that holds recycling, or not, and counts the asks.
    struct Told(bool, Arc<AtomicU64>);
    impl Master for Told {
        fn holds_recycling(&self) -> bool {
            self.0
        }
        fn replace_me(&self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        fn took_back(&self) -> bool {
            false
        }
        fn served_first(&self) {}
    }

    /// A master whose hold comes and goes, and that takes words back.
    #[derive(Default)]
    struct Holding {
        held: std::sync::atomic::AtomicBool,
        said: AtomicU64,
    }
    impl Master for Arc<Holding> {
        fn holds_recycling(&self) -> bool {
            self.held.load(Ordering::Relaxed)
        }
        fn replace_me(&self) {
            self.said.store(1, Ordering::Relaxed);
        }
        fn took_back(&self) -> bool {
            self.said.load(Ordering::Relaxed) == 0
        }
        fn served_first(&self) {}
    }

    #[tokio::test]
    async fn the_request_reaching_max_requests_pauses_and_its_end_leaves() {
        let r = Recorder::new(None, Some(2), None);
        let paused = r.paused();
        let (_, first) = starts(&r);
        assert_eq!((false, first), start(false, false));
        let (closes, last) = starts(&r);
        assert_eq!((closes, last), start(true, true));
        assert!(*paused.borrow(), "accepting goes on past the last start");
        // A request on another open connection meanwhile closes, but is
        // not the last: its end does not start the leave.
        let (closes, other) = starts(&r);
        assert_eq!((closes, other), start(true, false));
        finish(&r, other);
        finish(&r, first);
        let due = tokio::time::timeout(Duration::from_millis(50), r.leave_due()).await;
        assert!(due.is_err(), "the leave came before the last request ended");
        finish(&r, last);
        let due = tokio::time::timeout(Duration::from_secs(5), r.leave_due()).await;
        assert_eq!(due.ok(), Some("max_requests"));
    }

    #[tokio::test]
    async fn held_recycling_neither_pauses_nor_closes_and_comes_due_again() {
        let r = Recorder::new(None, Some(1), Some(Box::new(Told(true, Arc::default()))));
        let paused = r.paused();
        let (closes, last) = starts(&r);
        assert_eq!((closes, last), start(false, true));
        assert!(!*paused.borrow());
        finish(&r, last);
        let due = tokio::time::timeout(Duration::from_secs(5), r.leave_due()).await;
        assert_eq!(due.ok(), Some("max_requests"));
        r.resume();
        r.recycle_later(2);
        assert_eq!(starts(&r), start(false, false));
        assert_eq!(starts(&r), start(false, true));
    }

    #[test]
    fn the_master_is_asked_once_to_replace_a_worker_whose_last_request_started() {
        let asked = Arc::new(AtomicU64::new(0));
        let r = Recorder::new(None, Some(1), Some(Box::new(Told(false, asked.clone()))));
        assert_eq!(starts(&r), start(true, true));
        assert_eq!(starts(&r), start(true, false));
        assert_eq!(asked.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_hook_retire_pauses_until_recycling_is_held() {
        let r = Recorder::new(None, None, None);
        let paused = r.paused();
        r.retire();
        assert!(*paused.borrow() && r.leaving());
        assert_eq!(starts(&r), start(true, false));
        r.resume();
        assert!(!*paused.borrow() && !r.leaving());
    }

    async fn leave(r: &Recorder, ms: u64) -> Option<&'static str> {
        let due = r.leave_due();
        tokio::time::timeout(Duration::from_millis(ms), due)
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_wake_with_no_cause_is_no_leave_and_two_causes_are_both_seen() {
        let r = Recorder::new(None, Some(1), None);
        // A hook's retire read with the wake of another (two retires as
        // the leave's task reads the first): that wake is no leave.
        r.retire();
        r.leave.notify_one();
        assert_eq!(leave(&r, 5000).await, Some("hook"));
        assert_eq!(leave(&r, 50).await, None, "a wake with no cause left");
        // --max-requests due with a retire, one wake for both: each is seen.
        let (_, last) = starts(&r);
        finish(&r, last);
        r.retire();
        assert_eq!(leave(&r, 5000).await, Some("hook"));
        assert_eq!(leave(&r, 5000).await, Some("max_requests"));
        assert_eq!(leave(&r, 50).await, None);
    }

    #[test]
    fn a_word_taken_back_under_a_hold_gone_since_is_said_again() {
        const OWN: Duration = Duration::from_secs(3600);
        let m = Arc::new(Holding::default());
        let r = Recorder::new(None, Some(1), Some(Box::new(m.clone())));
        assert_eq!(starts(&r), start(true, true));
        assert_eq!(m.said.load(Ordering::Relaxed), 1);
        assert_eq!(r.look_while_leaving(OWN), None, "said and not taken back");
        // A hold comes, the master takes the byte back, the hold ends, all
        // before the worker looks: it says its word again, and stays paused.
        m.held.store(true, Ordering::Relaxed);
        m.said.store(0, Ordering::Relaxed);
        m.held.store(false, Ordering::Relaxed);
        assert_eq!(r.look_while_leaving(OWN), None);
        assert_eq!(m.said.load(Ordering::Relaxed), 1, "the word is said again");
        assert!(r.leaving());
        // Held when it looks: it stays, and says nothing more.
        m.held.store(true, Ordering::Relaxed);
        m.said.store(0, Ordering::Relaxed);
        assert_eq!(r.look_while_leaving(OWN), Some(Pause::Held));
        r.resume();
        assert_eq!(
            r.look_while_leaving(OWN),
            None,
            "resumed: nothing to look at"
        );
        m.held.store(false, Ordering::Relaxed);
        assert_eq!(r.look_while_leaving(Duration::ZERO), None);
        assert_eq!(
            m.said.load(Ordering::Relaxed),
            0,
            "a resumed worker said it again"
        );
        // Once its stop began, a worker says nothing more.
        let m = Arc::new(Holding::default());
        let r = Recorder::new(None, Some(1), Some(Box::new(m.clone())));
        assert_eq!(starts(&r), start(true, true));
        r.stop_begun();
        m.said.store(0, Ordering::Relaxed);
        assert_eq!(r.look_while_leaving(Duration::ZERO), None);
        assert_eq!(m.said.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_last_request_that_runs_the_stops_time_is_overdue() {
        let m = Arc::new(Holding::default());
        let r = Recorder::new(None, Some(1), Some(Box::new(m.clone())));
        assert_eq!(
            r.look_while_leaving(Duration::ZERO),
            None,
            "no last request yet"
        );
        assert_eq!(starts(&r), start(true, true));
        assert_eq!(r.look_while_leaving(Duration::from_secs(3600)), None);
        assert_eq!(r.look_while_leaving(Duration::ZERO), Some(Pause::Overdue));
        // Held comes first: the worker stays, the request runs on.
        m.held.store(true, Ordering::Relaxed);
        assert_eq!(r.look_while_leaving(Duration::ZERO), Some(Pause::Held));
        // A hook's retire pauses with no last request: never overdue.
        let r = Recorder::new(None, None, None);
        r.retire();
        assert_eq!(r.look_while_leaving(Duration::ZERO), None);
    }
}
