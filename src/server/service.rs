//! The hyper service: a request head becomes a `Job`, the executor's `Reply` becomes the response.
//!
//! `call` makes the request's `Record` (so every request, refused or not,
//! ends in `end.rs`), refuses what must not reach the app (an ambiguous
//! head, a declared body over `--limit-request-body`), and otherwise
//! queues the job and returns a future that waits for the reply. It does no
//! I/O and no Python. The body is not touched here; it travels with the job
//! so the app decides whether and when it is read; a refused request's body
//! is dropped unpolled, so hyper sends no `100 Continue` and closes the
//! connection instead of reading it. If the app side drops
//! the reply unsent (a bug, a lost greenlet), the client gets a 500.

use super::end::Counted;
use super::head_clock::Clock;
use crate::error::RequestError;
use crate::exchange::record::{Finish, Record};
use crate::exchange::reply::{Reply, ReplySender, ResponseBody};
use crate::exchange::{ConnInfo, Job};
use crate::exec::Executor;
use crate::forwarded::Proxies;
use crate::limits::Limits;
use http_body::Body;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

#[derive(Clone)]
pub(crate) struct Service {
    pub exec: Arc<Executor>,
    pub conn: Arc<ConnInfo>,
    /// The bounds checked here, before the app.
    pub limits: Arc<Limits>,
    /// Who may name the scheme (`proxy.rs`).
    pub proxies: Arc<Proxies>,
    /// The end of every request (`end.rs`).
    pub end: Arc<dyn Finish>,
    /// A graceful stop is under way: every response closes its connection.
    pub draining: Arc<AtomicBool>,
    /// This connection's head and idle timer: a request makes it busy.
    pub clock: Arc<Clock>,
}

impl hyper::service::Service<http::Request<Incoming>> for Service {
    type Response = http::Response<Counted>;
    type Error = Infallible;
    type Future = ReplyFuture;

    fn call(&self, req: http::Request<Incoming>) -> ReplyFuture {
        self.clock.busy();
        let (mut head, body) = req.into_parts();
        let body_end = self.conn.note_request(!body.is_end_stream());
        let declared = body.size_hint().exact();
        // `--limit-request-line` counts a target as the client sent it,
        // before `ClockedIo` escaped its raw bytes. A `#` in the line is
        // refused: hyper's parse dropped it and what followed.
        let mut limits = self.limits.head;
        let note = self.clock.head_note(self.conn.requests());
        if let Some(max) = limits.request_line.as_mut() {
            *max += note.escaped;
        }
        let refused = (if note.fragment {
            Err(RequestError::Fragment)
        } else {
            super::head::check_head(&head, &limits)
        })
        .and_then(|()| check_length(declared, &self.limits))
        .and_then(|()| super::proxy::mark_scheme(&mut head, &self.conn, &self.proxies))
        .err();
        // A request the app is to see counts toward --max-requests.
        let start = refused.is_none().then(|| self.end.starts());
        let record = Arc::new(Record::new(
            head,
            self.conn.clone(),
            self.end.clone(),
            declared,
            start,
        ));
        let (reply, rx) = ReplySender::new(record.clone());
        if let Some(e) = refused {
            reply.send(Reply::refusal(e));
        } else {
            self.exec.submit(Job {
                record: record.clone(),
                body,
                body_end,
                reply,
                // The head was parsed a moment ago: one clock read less.
                queued: record.received,
            });
        }
        ReplyFuture {
            rx,
            record,
            draining: self.draining.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// `--limit-request-body` for a declared `Content-Length` (`declared` is
/// hyper's own reading of it, `None` for a chunked body): refused before
/// the app runs, so not one body byte is read. Chunked bodies are counted
/// as the app reads them (`wsgi/input.rs`).
pub(crate) fn check_length(declared: Option<u64>, limits: &Limits) -> Result<(), RequestError> {
    match (declared, limits.limit_request_body) {
        (Some(n), Some(max)) if n > max => Err(RequestError::BodyTooLarge),
        _ => Ok(()),
    }
}

/// Whether `reply` to an HTTP/1.0 request (which has no chunked coding) can
/// only end by closing the connection: a streamed body with no
/// `Content-Length` (none at all to HEAD, or in a 204 or 304). hyper would say `Connection: keep-alive` to a client
/// that asked for it, then close to end the body; the head says `close`.
fn close_delimited(reply: &Reply, head: bool) -> bool {
    matches!(reply.body, ResponseBody::Stream(_))
        && !head
        && reply.status != http::StatusCode::NO_CONTENT
        && reply.status != http::StatusCode::NOT_MODIFIED
        && !reply.headers.contains_key(http::header::CONTENT_LENGTH)
}

/// Waits for the reply without boxing a future per request.
pub(crate) struct ReplyFuture {
    rx: oneshot::Receiver<Reply>,
    record: Arc<Record>,
    draining: Arc<AtomicBool>,
    clock: Arc<Clock>,
}

impl Drop for ReplyFuture {
    /// A reply handed over but never taken: its connection ended first. After
    /// the stop's cut, that is the cut's doing (`drive` ends a connection
    /// before polling hyper once the cut is on): the request is lost with it.
    fn drop(&mut self) {
        if !crate::server::stop_cut() {
            return;
        }
        // Closed first: a reply sent from now on fails, and `send` marks it.
        self.rx.close();
        if let Ok(reply) = self.rx.try_recv() {
            if reply.lost_with_a_cut() {
                self.record.cut_by_stop();
            }
        }
    }
}

impl Future for ReplyFuture {
    type Output = Result<http::Response<Counted>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let reply = match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(reply)) => reply,
            Poll::Ready(Err(_)) => {
                let e = RequestError::NoResponse;
                this.record.answered(e.status().as_u16(), Some(e));
                Reply::refusal(e)
            }
        };
        let mut reply = reply;
        // HTTP/1.1 responses pay for none of the HTTP/1.0 checks.
        let http10 = this.record.head.version == http::Version::HTTP_10;
        // A leaving worker's responses say `Connection: close` (from the
        // one that reaches --max-requests, or a hook's retire): the client
        // takes its next request elsewhere, not to a worker that stops.
        if this.draining.load(Ordering::Relaxed)
            || this.record.closing()
            || (http10 && close_delimited(&reply, this.record.is_head()))
        {
            reply.headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        let closes = http10
            && reply
                .headers
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let (record, clock) = (this.record.clone(), this.clock.clone());
        let mut res = reply.into_response(|body| Counted::new(body, record, clock));
        if closes {
            // hyper answers an HTTP/1.0 client that asked for keep-alive
            // with `keep-alive` appended to any `Connection` of a response
            // marked HTTP/1.1 ("close, keep-alive"); one marked HTTP/1.0
            // that does not say keep-alive, it closes after, as it says.
            *res.version_mut() = http::Version::HTTP_10;
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_body_limit() {
        let cases: &[(Option<u64>, Option<u64>, Option<RequestError>)] = &[
            (Some(10), None, None),
            (None, Some(10), None),
            (Some(9), Some(10), None),
            (Some(10), Some(10), None),
            (Some(11), Some(10), Some(RequestError::BodyTooLarge)),
            (Some(0), Some(1), None),
            (
                Some(u64::MAX),
                Some(u64::MAX - 1),
                Some(RequestError::BodyTooLarge),
            ),
        ];
        for &(declared, limit, want) in cases {
            let limits = Limits {
                limit_request_body: limit,
                ..Limits::FIXED
            };
            assert_eq!(
                check_length(declared, &limits).err(),
                want,
                "{declared:?} {limit:?}"
            );
        }
    }
}
