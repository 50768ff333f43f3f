//! The body side of a response: one buffer, a file, or a stream, then the end.
//!
//! `send_full` and `send_file` are the fast paths that need no channel;
//! `try_push` queues one chunk without blocking (gevent parks in Python when
//! it reports full), `push_blocking` waits with the GIL released (thread
//! mode). `finish` and `fail` end the exchange exactly once: they send a
//! head if none went out, close or abort the stream, drain what the app left
//! of the request body, and write the access log line.

use super::{response_error, Sent, StartResponse};
use crate::exec::park;
use crate::log::access::Entry;
use crate::wsgi::pipe::{Pipe, PipeEnd, Push};
use crate::wsgi::response::{FileBody, PipeReceiver, PipeSender, Reply, ResponseBody};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pyo3::prelude::*;
use std::sync::Arc;
use std::task::Poll;

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
            _ => chunk,
        };
        st.sent = if self.is_head { 0 } else { body.len() as u64 };
        self.send_head(&mut st, ResponseBody::Full(Some(body)))
            .map_err(response_error)?;
        st.remaining = Some(0);
        Ok(true)
    }

    /// Sends a file from its descriptor; false when the head is already out.
    pub(crate) fn send_file(&self, file: std::fs::File, block: usize) -> PyResult<bool> {
        let mut st = self.state.lock();
        if st.head_sent {
            return Ok(false);
        }
        let size = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let declared = st.staged.as_ref().and_then(|s| s.declared);
        // Never more than declared; the file's size when nothing is declared.
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
        st.sent = if self.is_head { 0 } else { len.unwrap_or(0) };
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
        if st.gone || st.finished {
            return Ok(Ok(Sent::Stop));
        }
        if !st.head_sent {
            let pipe = Arc::new(Pipe::new(self.worker.limits.response_buffer));
            let body = ResponseBody::Stream(PipeReceiver(pipe.clone()));
            self.send_head(&mut st, body).map_err(response_error)?;
            st.pipe = Some(PipeSender(pipe));
        }
        let Some(pipe) = st.pipe.as_ref().map(|p| p.0.clone()) else {
            // The head went out with a full body already; nothing more fits.
            return Ok(Ok(Sent::Stop));
        };
        if self.is_head {
            return Ok(Ok(Sent::Ok));
        }
        let before = (st.remaining, st.sent);
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
                (st.remaining, st.sent) = before;
                Ok(Err(back))
            }
            Push::Closed => {
                st.gone = true;
                Ok(Ok(Sent::Stop))
            }
        }
    }

    /// Thread mode: queues a chunk, waiting with the GIL released while the
    /// client is slower than the app.
    /// A client that takes nothing for `--body-timeout` is given up: the
    /// response is aborted and the app told to stop, so a reader that
    /// stalls cannot hold a thread forever.
    pub(crate) fn push_blocking(&self, py: Python<'_>, chunk: Bytes) -> PyResult<Sent> {
        let mut slot = Some(chunk);
        let deadline = self
            .worker
            .limits
            .body_timeout
            .map(|t| std::time::Instant::now() + t);
        py.detach(|| {
            park::wait(deadline, |w| {
                let Some(c) = slot.take() else {
                    return Poll::Ready(Ok(Sent::Ok));
                };
                match self.try_push(c, w) {
                    Ok(Ok(sent)) => Poll::Ready(Ok(sent)),
                    Ok(Err(back)) => {
                        slot = Some(back);
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(Err(e)),
                }
            })
            .unwrap_or_else(|| {
                let mut st = self.state.lock();
                st.gone = true;
                if let Some(p) = &st.pipe {
                    p.0.finish(PipeEnd::Aborted);
                }
                Ok(Sent::Stop)
            })
        })
    }

    /// Ends the response normally: sends a head with an empty body if none
    /// went out, closes the stream, drains the request body, logs.
    pub(crate) fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let result = {
            let mut st = self.state.lock();
            if st.finished {
                return Ok(());
            }
            let r = if !st.head_sent {
                self.send_head(&mut st, ResponseBody::Empty)
                    .map_err(response_error)
            } else {
                Ok(())
            };
            st.finished = true;
            if let Some(p) = &st.pipe {
                p.0.finish(PipeEnd::Done);
            }
            r
        };
        if let Err(e) = result {
            // The app returned without calling start_response.
            self.fail(py, &e)?;
        }
        self.drain_input();
        self.log_access();
        Ok(())
    }

    /// The app failed: a 500 if nothing was sent yet, else abort the stream
    /// so the client can tell the body is incomplete. The traceback is logged.
    pub(crate) fn fail(&self, py: Python<'_>, err: &PyErr) -> PyResult<()> {
        crate::log::error::app_exception(py, err, &self.head);
        let mut st = self.state.lock();
        if !st.head_sent {
            st.staged = None;
            // An app that failed because the body was malformed gets the
            // client's fault answered as such, and the connection closed.
            let malformed = self.input.get().try_source().is_some_and(|s| s.malformed());
            let mut reply = if malformed {
                Reply::error(StatusCode::BAD_REQUEST, true)
            } else {
                Reply::error(StatusCode::INTERNAL_SERVER_ERROR, false)
            };
            if self
                .input
                .get()
                .try_source()
                .is_some_and(|s| s.expectation_pending())
            {
                reply
                    .headers
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                self.input.get().abandon();
            }
            st.status = reply.status.as_u16();
            st.head_sent = true;
            if let Some(tx) = st.reply.take() {
                let _ = tx.send(reply);
            }
        } else if let Some(p) = &st.pipe {
            p.0.finish(PipeEnd::Aborted);
        }
        st.finished = true;
        drop(st);
        self.drain_input();
        self.log_access();
        Ok(())
    }

    /// Discards what the app left of the request body, within the limits,
    /// on the I/O runtime; past them hyper closes the connection.
    fn drain_input(&self) {
        let Some(mut body) = self.input.get().take_rest() else {
            return;
        };
        let (max, time) = (
            self.worker.limits.drain_bytes,
            self.worker.limits.drain_time,
        );
        self.worker.runtime.spawn(async move {
            use http_body_util::BodyExt;
            let mut seen = 0u64;
            let _ = tokio::time::timeout(time, async {
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(d) = frame.data_ref() {
                        seen += d.len() as u64;
                        if seen > max {
                            break;
                        }
                    }
                }
            })
            .await;
            drop(body);
        });
    }

    fn log_access(&self) {
        let Some(log) = &self.worker.access_log else {
            return;
        };
        let st = self.state.lock();
        log.write(&Entry {
            head: &self.head,
            peer: self.peer,
            status: st.status,
            sent: st.sent,
            received_at: self.received_at,
            elapsed: self.received.elapsed(),
        });
    }
}
