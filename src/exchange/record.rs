//! The bookkeeping of one request, and the single moment it ends.
//!
//! A `Record` is made by the service for every request head, refused or
//! not, and shared by whoever still works on the request: the job on the
//! app side, the response body on the I/O side. Status and refusal are
//! written when the response head is handed over (`ReplySender::send`),
//! body bytes as hyper takes them. When the last holder lets go, `Drop`
//! hands the finished record to the `Finish` handler it was made with,
//! exactly once: that handler (`server/end.rs`) writes the access log and
//! counts the metrics. Each record carries the request's metrics `Track`
//! (its row on the status page, its state); this module decides nothing
//! about either.

use super::ConnInfo;
use crate::error::RequestError;
use crate::metrics::Track;
use http::request::Parts;
use http::HeaderMap;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What a request ended with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// The status sent (0: no response head went out).
    pub status: u16,
    /// Response body bytes handed to hyper.
    pub sent: u64,
    /// Set when the server answered (or cut the answer) itself.
    pub refusal: Option<RequestError>,
    /// The response body was cut short (app failure, client gone).
    pub aborted: bool,
}

/// A finished request, as the end-of-request handler sees it.
pub(crate) struct Finished<'a> {
    /// `None` when hyper refused the head before there was one.
    pub head: Option<&'a Parts>,
    pub peer: Option<SocketAddr>,
    pub tally: Tally,
    /// Since the head was parsed (the wall-clock time of that is now less
    /// this: no wall clock is read for it unless an access log is on).
    pub elapsed: Duration,
    /// The request's metrics (`None` for a head hyper refused).
    pub track: Option<&'a Track>,
    /// The response headers, kept only when `Finish::keeps_response_headers`.
    pub response_headers: Option<&'a HeaderMap>,
    /// How it started, if the app was to see it (`Finish::starts`); `None`
    /// for a request refused before it.
    pub start: Option<Start>,
}

/// Where finished requests go: the one end of every request.
pub(crate) trait Finish: Send + Sync {
    fn finish(&self, done: &Finished<'_>);

    /// Whether `finish` wants the response headers (an access log format
    /// with `{name}o`): only then does each record keep a copy.
    fn keeps_response_headers(&self) -> bool {
        false
    }

    /// Called as each request the app is to see starts (one refused before
    /// it does not count toward `--max-requests`, as in gunicorn, whose
    /// count skips a request it could not parse).
    fn starts(&self) -> Start {
        Start::default()
    }

    /// Whether a response starting now closes its connection: the worker
    /// is leaving (`--max-requests` reached, or a hook's retire), as
    /// gunicorn's once `worker.alive` is false.
    fn closing(&self) -> bool {
        false
    }
}

/// A request the app is to see, as it starts (`Finish::starts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Start {
    /// It reached `--max-requests`: the worker leaves once it is done.
    pub last: bool,
}

pub(crate) struct Record {
    pub head: Parts,
    pub conn: Arc<ConnInfo>,
    /// When the head was parsed, for `%(D)s`.
    pub received: Instant,
    tally: Mutex<Tally>,
    end: Arc<dyn Finish>,
    /// Where this request shows in the metrics (inert when they are off).
    pub track: Track,
    /// The response headers, for an access log that names one (empty, no
    /// allocation, otherwise; boxed, so a record that keeps none stays small).
    response_headers: OnceLock<Box<HeaderMap>>,
    /// How it started, if the app was to see it (`Finish::starts`).
    start: Option<Start>,
}

impl Record {
    /// A request whose head was just parsed; `declared` is its body's
    /// Content-Length as hyper read it (`None` when chunked); `start` as
    /// `Finish::starts` gave it, `None` when refused before the app.
    pub(crate) fn new(
        head: Parts,
        conn: Arc<ConnInfo>,
        end: Arc<dyn Finish>,
        declared: Option<u64>,
        start: Option<Start>,
    ) -> Record {
        let received = Instant::now();
        let track = Track::start(&head, conn.peer, declared, received);
        Record {
            track,
            head,
            conn,
            received,
            tally: Mutex::new(Tally::default()),
            end,
            response_headers: OnceLock::new(),
            start,
        }
    }

    /// Whether its response, starting now, closes its connection
    /// (`Finish::closing`).
    pub(crate) fn closing(&self) -> bool {
        self.end.closing()
    }

    pub(crate) fn is_head(&self) -> bool {
        self.head.method == http::Method::HEAD
    }

    /// The response head went out (or was handed over) with this status.
    pub(crate) fn answered(&self, status: u16, refusal: Option<RequestError>) {
        let mut t = self.tally.lock();
        t.status = status;
        if refusal.is_some() {
            t.refusal = refusal;
        }
    }

    /// The app's response headers, kept when the end handler asks for them.
    pub(crate) fn response_headers(&self, headers: &HeaderMap) {
        if self.end.keeps_response_headers() {
            let _ = self.response_headers.set(Box::new(headers.clone()));
        }
    }

    /// Body bytes handed to hyper.
    pub(crate) fn sent(&self, n: u64) {
        self.track.sent(n);
        self.tally.lock().sent += n;
    }

    /// The body was cut short; `why` when the server cut it.
    pub(crate) fn aborted(&self, why: Option<RequestError>) {
        let mut t = self.tally.lock();
        t.aborted = true;
        if t.refusal.is_none() {
            t.refusal = why;
        }
    }

    /// The response never went out: the stop's time ran out and cut its
    /// connection first. Lost with the stop, whatever the reply was (the
    /// app's status, or a 500 for its failure, already logged).
    pub(crate) fn cut_by_stop(&self) {
        let mut t = self.tally.lock();
        t.aborted = true;
        t.refusal = Some(RequestError::StopCut);
    }

    pub(crate) fn tally(&self) -> Tally {
        *self.tally.lock()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let tally = *self.tally.get_mut();
        self.end.finish(&Finished {
            head: Some(&self.head),
            peer: self.conn.remote_addr(),
            tally,
            elapsed: self.received.elapsed(),
            track: Some(&self.track),
            response_headers: self.response_headers.get().map(|h| &**h),
            start: self.start,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen(Mutex<Vec<Tally>>);
    impl Finish for Seen {
        fn finish(&self, done: &Finished<'_>) {
            self.0.lock().push(done.tally);
        }
    }

    #[test]
    fn ends_once_when_the_last_holder_lets_go() {
        let seen = Arc::new(Seen::default());
        let (head, ()) = http::Request::new(()).into_parts();
        let conn = Arc::new(ConnInfo::new(
            None,
            crate::exchange::ServerName::new("h".into(), "1".into()),
        ));
        let rec = Arc::new(Record::new(head, conn, seen.clone(), None, None));
        let other = rec.clone();
        rec.answered(200, None);
        rec.sent(5);
        drop(rec);
        assert!(seen.0.lock().is_empty(), "still held by the other side");
        other.sent(3);
        other.aborted(Some(RequestError::AppFailed));
        drop(other);
        let got = seen.0.lock().clone();
        assert_eq!(
            got,
            vec![Tally {
                status: 200,
                sent: 8,
                refusal: Some(RequestError::AppFailed),
                aborted: true
            }]
        );
    }
}
