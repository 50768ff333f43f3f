//! The body side of a response: one buffer, a file, or a stream, then the end.
//!
//! `send_full` and `send_file` are the fast paths that need no channel;
//! `try_push` queues one chunk without blocking (`push_now` without a
//! waker, for a caller that would rather wait elsewhere), and `push_wait` waits for
//! room through the request's `Waiter` (a blocked thread, or a park order
//! for the greenlet), giving a client that takes nothing for
//! `--body-timeout` up. `finish` and `fail` end the app's side exactly once:
//! they send a head if none went out, close or abort the stream, drain what
//! the app left of the request body, and let go of the request's record.

use super::{response_error, ResponseError, Sent, StartResponse};
use crate::error::RequestError;
use crate::exchange::pipe::{Pipe, PipeEnd, Push};
use crate::exchange::reply::{FileBody, PipeReceiver, PipeSender, Reply, ResponseBody};
use crate::exchange::BodyEnd;
use crate::exec::wait::Waited;
use bytes::Bytes;
use http::HeaderValue;
use pyo3::prelude::*;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

impl StartResponse {
    /// The fast path: the whole body in one buffer, no channel.
    pub(crate) fn send_full(&self, chunk: Bytes) -> PyResult<bool> {
        let mut st = self.state.lock();
        if st.head_sent {
            return Ok(false);
        }
        let declared = st.staged.as_ref().and_then(|s| s.declared);
        let body = match declared {
            Some(n) if (chunk.len() as u64) > n => chunk.slice(..n as usize),
            // Shorter than declared: hyper would drop the whole response
            // unsent. The stream sends what there is, then aborts.
            Some(n) if (chunk.len() as u64) < n => return Ok(false),
            _ => chunk,
        };
        self.send_head(&mut st, ResponseBody::Full(Some(body)))
            .map_err(response_error)?;
        st.remaining = Some(0);
        Ok(true)
    }

    /// A body of `n` bytes is coming item by item (a long list): the head
    /// says `Content-Length: n` when the app declared none, as for a list
    /// sent whole.
    pub(crate) fn declare_length(&self, n: u64) {
        let mut st = self.state.lock();
        if st.head_sent {
            return;
        }
        if let Some(staged) = st.staged.as_mut().filter(|s| s.declared.is_none()) {
            staged
                .headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            staged.declared = Some(n);
        }
    }

    /// Sends a file from its descriptor; false when the head is already out.
    pub(crate) fn send_file(&self, file: std::fs::File, block: usize) -> PyResult<bool> {
        let mut st = self.state.lock();
        if st.head_sent {
            return Ok(false);
        }
        // What is left of a regular file from where the app left it.
        let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| {
            use std::io::Seek;
            let pos = (&file).stream_position().unwrap_or(0);
            m.len().saturating_sub(pos)
        });
        let declared = st.staged.as_ref().and_then(|s| s.declared);
        // Never more than declared; the rest of the file when nothing is declared.
        let len = match (declared, size) {
            (Some(d), _) => Some(d),
            (None, Some(s)) => Some(s),
            (None, None) => None,
        };
        if declared.is_none() {
            if let (Some(staged), Some(n)) = (st.staged.as_mut(), len) {
                staged
                    .headers
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        self.send_head(&mut st, ResponseBody::File(FileBody::new(file, len, block)))
            .map_err(response_error)?;
        st.remaining = Some(0);
        Ok(true)
    }

    /// Tries to queue a chunk without blocking. `Err(chunk)`: the queue is
    /// full and `waker` will be woken when there is room.
    pub(crate) fn try_push(
        &self,
        chunk: Bytes,
        waker: &std::task::Waker,
    ) -> PyResult<Result<Sent, Bytes>> {
        let mut st = self.state.lock();
        if chunk.is_empty() {
            return Ok(Ok(Sent::Ok));
        }
        if st.gone || st.record.is_none() {
            return Ok(Ok(Sent::Stop));
        }
        if !st.head_sent {
            self.open_stream(&mut st).map_err(response_error)?;
        }
        let Some(pipe) = st.pipe.as_ref().map(|p| p.0.clone()) else {
            // The head went out with a full body already; nothing more fits.
            return Ok(Ok(Sent::Stop));
        };
        if !st.bodied {
            // HEAD, 1xx, 204, 205, 304: the body is dropped, as HEAD's always
            // was (hyper may have let the stream go already: not a client
            // gone). Once the connection is closed, an iterable is stopped
            // (a HEAD of an endless stream would run on), and write() goes on
            // dropping.
            let ended = st.record.as_ref().is_some_and(|r| r.conn.ended());
            return Ok(Ok(if ended { Sent::Stop } else { Sent::Ok }));
        }
        let before = st.remaining;
        let Some(clipped) = Self::clip(&mut st, chunk) else {
            return Ok(Ok(Sent::Stop));
        };
        match pipe.try_push(clipped, waker) {
            Push::Sent => Ok(Ok(if st.remaining == Some(0) {
                Sent::Stop
            } else {
                Sent::Ok
            })),
            Push::Full(back) => {
                // Not taken: undo the accounting so the retry counts it once.
                st.remaining = before;
                Ok(Err(back))
            }
            Push::Closed => {
                st.gone = true;
                Ok(Ok(Sent::Stop))
            }
        }
    }

    /// Sends the staged head with a streamed body, whose pipe goes in `st.pipe`.
    fn open_stream(&self, st: &mut super::State) -> Result<(), ResponseError> {
        let pipe = Arc::new(Pipe::new(
            self.ctx.limits.response_buffer,
            self.ctx.limits.response_buffer_max,
        ));
        self.send_head(st, ResponseBody::Stream(PipeReceiver(pipe.clone())))?;
        st.pipe = Some(PipeSender(pipe));
        Ok(())
    }

    /// `write(b"")`: the head goes out now, as PEP 3333 has it at the first
    /// `write()` (an empty item of the iterable sends nothing, not even the
    /// head, so the headers may still change).
    pub(crate) fn head_for_write(&self) -> PyResult<()> {
        let mut st = self.state.lock();
        if st.head_sent || st.gone || st.record.is_none() {
            return Ok(());
        }
        self.open_stream(&mut st).map_err(response_error)
    }

    /// Queues a chunk if there is room now; `Err(chunk)` when the caller must
    /// wait (`push_wait`). Thread mode calls this holding the GIL, so a chunk
    /// that fits costs no GIL release.
    pub(crate) fn push_now(&self, chunk: Bytes) -> PyResult<Result<Sent, Bytes>> {
        // A full queue keeps this no-op waker until `push_wait` polls again
        // with its own; room made in between is seen by that poll.
        self.try_push(chunk, std::task::Waker::noop())
    }

    /// Queues a chunk, waiting for room while the client is slower than the
    /// app (thread mode: the caller released the GIL; greenlet mode: a park
    /// order comes back, and the call is repeated with `fresh` false). A
    /// client that takes nothing for `--body-timeout` is given up: by the
    /// socket's timer while the socket is full (hyper fails, the stream's
    /// receiver goes, `Stop`), else here: the response is aborted, the
    /// connection cut, and `Stop` tells the app to stop.
    pub(crate) fn push_wait(&self, chunk: Bytes, fresh: bool) -> PyResult<Waited<Sent>> {
        let mut slot = Some(chunk);
        let mut fresh = fresh;
        loop {
            let (deadline, record) = {
                let mut st = self.state.lock();
                if fresh {
                    st.push_since = Instant::now();
                    st.push_popped = Self::popped(&st);
                    st.push_writes = Self::write_progress(&st).1;
                }
                let record = st.record.clone().filter(|r| r.track.on());
                (
                    self.ctx.limits.body_timeout.map(|t| st.push_since + t),
                    record,
                )
            };
            let waited = self.waiter.wait(deadline, |w| {
                let Some(c) = slot.take() else {
                    return Poll::Ready(Ok(Sent::Ok));
                };
                match self.try_push(c, w) {
                    Ok(Ok(sent)) => Poll::Ready(Ok(sent)),
                    Ok(Err(back)) => {
                        slot = Some(back);
                        // Waiting on a slow client (shown as such while it lasts).
                        if let Some(r) = &record {
                            r.track.to(crate::metrics::State::Sending);
                        }
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(Err(e)),
                }
            });
            if let Some(r) = record.filter(|_| !matches!(waited, Waited::Park(_))) {
                r.track.to(crate::metrics::State::App);
            }
            return Ok(match waited {
                Waited::Ready(r) => Waited::Ready(r?),
                Waited::Park(p) => Waited::Park(p),
                Waited::TimedOut => {
                    let mut st = self.state.lock();
                    let (socket_full, writes) = Self::write_progress(&st);
                    if Self::popped(&st) != st.push_popped
                        || writes != st.push_writes
                        || socket_full
                    {
                        // The response moved since the wait began: hyper
                        // took chunks (the producer is only woken once a
                        // quarter is left unwritten) or wrote to the
                        // socket, so the timeout starts over. Or the
                        // socket is full: its own timer counts what the
                        // client takes, and ends the connection (and so
                        // this stream) when that is nothing.
                        drop(st);
                        fresh = true;
                        continue;
                    }
                    st.gone = true;
                    if let Some(r) = &st.record {
                        r.conn.give_up();
                    }
                    if let Some(p) = &st.pipe {
                        p.0.finish(PipeEnd::Aborted);
                    }
                    // hyper took nothing with room in the socket: it may not
                    // poll the body again to see the abort; close it now.
                    if let Some(r) = &st.record {
                        r.conn.cut();
                    }
                    Waited::Ready(Sent::Stop)
                }
            });
        }
    }

    /// The connection's `ConnInfo::write_progress` (nothing written, once
    /// the record is gone).
    fn write_progress(st: &super::State) -> (bool, u64) {
        st.record
            .as_ref()
            .map_or((false, 0), |r| r.conn.write_progress())
    }

    /// The stream's chunks taken by the socket side so far (0 before it exists).
    fn popped(st: &super::State) -> u64 {
        st.pipe.as_ref().map_or(0, |p| p.0.popped())
    }

    /// Ends the response normally: sends a head with an empty body if none
    /// went out, closes the stream, drains the request body.
    pub(crate) fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let (result, record) = {
            let mut st = self.state.lock();
            let Some(record) = st.record.take() else {
                return Ok(());
            };
            // The app is done; what is left is the client taking the response.
            record.track.to(crate::metrics::State::Sending);
            let r = if st.head_sent {
                Ok(())
            } else if st
                .staged
                .as_ref()
                .is_some_and(|s| s.declared.is_some_and(|n| n > 0) && self.bodied(s.status))
            {
                // Nothing sent of a declared length: the head, then an abort
                // (an empty body would go out as a complete `Content-Length: 0`).
                self.open_stream(&mut st).map_err(response_error)
            } else {
                self.send_head(&mut st, ResponseBody::Empty)
                    .map_err(response_error)
            };
            if let Some(p) = &st.pipe {
                // Short of the declared length, the body must not look
                // complete; and hyper, finding the length short at the end,
                // would drop what it has not flushed yet. An abort flushes
                // what was sent, then closes the connection.
                let short = st.bodied && st.remaining.is_some_and(|left| left > 0);
                if short && !st.gone {
                    // Not a client that went away: the app gave less.
                    let left = st.remaining.unwrap_or(0);
                    crate::server::end::tell_cut(
                        &record,
                        &format!(
                            "{left} bytes short of its Content-Length: the app's body ended there"
                        ),
                    );
                }
                p.0.finish(if short {
                    PipeEnd::Aborted
                } else {
                    PipeEnd::Done
                });
            }
            (r, record)
        };
        if let Err(e) = result {
            // The app returned without calling start_response.
            self.fail_with(py, &e, &record);
        }
        // The request body is drained once the iterable is closed
        // (`drain_input`, called by the drivers): its `close()` may read it.
        Ok(())
    }

    /// The app failed: a 500 if nothing was sent yet, else abort the stream
    /// so the client can tell the body is incomplete. The traceback is logged.
    /// The body is drained by the driver once the iterable is closed (or at
    /// once when the app's call raised: there is none).
    pub(crate) fn fail(&self, py: Python<'_>, err: &PyErr) -> PyResult<()> {
        let Some(record) = self.state.lock().record.take() else {
            return Ok(());
        };
        self.fail_with(py, err, &record);
        Ok(())
    }

    fn fail_with(
        &self,
        py: Python<'_>,
        err: &PyErr,
        record: &Arc<crate::exchange::record::Record>,
    ) {
        let input = self.input.get();
        // An app that failed because the body was malformed, too large or
        // too slow gets the client's fault answered as such, and the
        // connection closed.
        let client_fault = input.try_source().and_then(|s| {
            if s.malformed() {
                Some(RequestError::MalformedBody)
            } else if s.too_large() {
                Some(RequestError::BodyTooLarge)
            } else if s.timed_out() {
                Some(RequestError::BodyTimeout)
            } else if s.disconnected() {
                // The client went away (or half-closed) mid-body, or the
                // stop's time ran out and cut its connection.
                Some(if crate::server::stop_cut() {
                    RequestError::StopCut
                } else {
                    RequestError::ClientGone
                })
            } else {
                None
            }
        });
        // `RequestTooLarge`, `ClientTimeout` or a malformed body's error let
        // through before the head is the client's doing, not a bug in the
        // app: the refusal's log line (server/end.rs) says it, without a
        // traceback.
        let refused_quietly = match client_fault {
            Some(RequestError::BodyTooLarge) => {
                err.is_instance_of::<crate::wsgi::input::RequestTooLarge>(py)
            }
            Some(RequestError::BodyTimeout) => {
                err.is_instance_of::<crate::wsgi::input::ClientTimeout>(py)
            }
            // A read of a body that broke its framing, or whose client
            // went away, raises `ClientDisconnected`: no bug in the app, and
            // the refusal's one line says what happened (gunicorn logs
            // nothing for a client gone).
            Some(
                RequestError::MalformedBody | RequestError::ClientGone | RequestError::StopCut,
            ) => err.is_instance_of::<crate::wsgi::input::ClientDisconnected>(py),
            _ => false,
        };
        let head_sent = self.state.lock().head_sent;
        if refused_quietly && head_sent {
            // The response had begun (an app that answers as it reads): an
            // abort, with no refusal to log it.
            match client_fault {
                Some(RequestError::ClientGone) => crate::log::error::info(&format!(
                    "Client went away while the app read the body of {} \
                     (siesta.ClientDisconnected, not caught by the app)",
                    record.head.uri
                )),
                Some(RequestError::StopCut) => crate::log::error::write(
                    crate::log::error::Level::Warning,
                    &format!(
                        "The stop cut the connection while the app read \
                     the body of {}",
                        record.head.uri
                    ),
                ),
                _ => crate::log::error::app_exception(py, err, &record.head),
            }
        } else if err.is_instance_of::<crate::wsgi::input::ClientDisconnected>(py)
            && self.state.lock().gone
        {
            // `write()` raised it: the client left during the response, as a
            // generator's client may, for which nothing is logged either.
            // Or the server gave the client up (`--body-timeout`), which
            // the cut's own line tells.
            if !record.conn.given_up() {
                crate::log::error::info(&format!(
                    "Client went away while the app wrote the response to {} \
                     (siesta.ClientDisconnected, not caught by the app)",
                    record.head.uri
                ));
            }
        } else if !refused_quietly {
            crate::log::error::app_exception(py, err, &record.head);
        }
        let mut st = self.state.lock();
        if !st.head_sent {
            st.staged = None;
            st.head_sent = true;
            let refusal = client_fault.unwrap_or(RequestError::AppFailed);
            let mut reply = Reply::refusal(refusal);
            if self.body_closes(input) {
                reply
                    .headers
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some(tx) = st.reply.take() {
                self.waiter.hand_over(|| tx.send(reply));
            }
        } else {
            // An abort, not a refusal: the status went out as the app gave it.
            record.aborted(None);
            if let Some(p) = &st.pipe {
                p.0.finish(PipeEnd::Aborted);
            }
        }
    }

    /// Discards what the app left of the request body, within the limits,
    /// on the I/O runtime; past them hyper closes the connection. Called
    /// once the response is over and its iterable closed: an iterable's
    /// `close()` may still read the body (a middleware that drains it
    /// itself), as gunicorn lets it. Reads after this fail.
    pub(crate) fn drain_input(&self) {
        let Some((mut body, end)) = self.input.get().take_rest() else {
            return;
        };
        let (mut max, time) = (self.ctx.limits.drain_bytes, self.ctx.limits.drain_time);
        if end.as_ref().is_some_and(BodyEnd::read_in) {
            // Read from the socket already (within hyper's bounded buffer):
            // `body_closes` kept the connection for it.
            max = u64::MAX;
        }
        self.ctx.runtime.spawn(async move {
            use http_body_util::BodyExt;
            let mut seen = 0u64;
            let drained = tokio::time::timeout(time, async {
                loop {
                    match body.frame().await {
                        None => return true,
                        Some(Err(_)) => return false,
                        Some(Ok(frame)) => {
                            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                            if seen > max {
                                return false;
                            }
                        }
                    }
                }
            })
            .await;
            if let (Ok(true), Some(end)) = (drained, end) {
                end.reached();
            }
            drop(body);
        });
    }
}
