//! The response as hyper sees it: a head plus one of four body shapes.
//!
//! `Reply` travels once, from the thread or greenlet running the app (or
//! from the server refusing a request) to the hyper service future, through
//! a `ReplySender`, which is also where the request's `Record` learns the
//! status. Its body is `Empty`, a `Full` buffer (the fast path for a list of
//! bytes, no channel at all), a `Stream` fed through a bounded `Pipe`
//! (generators and `write()`), or a `File` read from a descriptor off the
//! GIL (`wsgi.file_wrapper`, `file_body.rs`). Validating what the app asked for is
//! `wsgi/start_response`'s job.

use super::chunks::Chunks;
pub(crate) use super::file_body::FileBody;
use super::pipe::{Pipe, PipeEnd};
use super::record::Record;
use crate::error::RequestError;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// A complete response head and its body, ready for hyper.
pub(crate) struct Reply {
    pub status: StatusCode,
    /// The app's reason phrase, when it differs from the standard one.
    pub reason: Option<Bytes>,
    pub headers: HeaderMap,
    pub body: ResponseBody,
    /// Set when the server answers itself: why.
    pub refusal: Option<RequestError>,
}

impl Reply {
    /// Whether a cut by the stop loses this reply with its request: the
    /// app's answer, or its failure's 500. The server's own refusals (a 503
    /// for a body read the cut broke, or for a request still queued at the
    /// stop) keep their reason.
    pub(crate) fn lost_with_a_cut(&self) -> bool {
        matches!(
            self.refusal,
            None | Some(crate::error::RequestError::AppFailed)
        )
    }

    /// The hyper response, its body wrapped by `wrap` (the I/O side counts
    /// the bytes there).
    pub(crate) fn into_response<B>(
        self,
        wrap: impl FnOnce(ResponseBody) -> B,
    ) -> http::Response<B> {
        let mut res = http::Response::new(wrap(self.body));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers;
        if let Some(reason) = self.reason {
            if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason) {
                res.extensions_mut().insert(phrase);
            }
        }
        res
    }

    /// Siesta's own answer for `e`: its status, a short plain-text body, and
    /// `Connection: close` when the connection cannot be trusted further.
    pub(crate) fn refusal(e: RequestError) -> Self {
        let status = e.status();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        headers.insert(
            http::header::SERVER,
            http::HeaderValue::from_static("siesta"),
        );
        if e.closes() {
            headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        let text = status.canonical_reason().unwrap_or("Error");
        Reply {
            status,
            reason: None,
            headers,
            body: ResponseBody::Full(Some(Bytes::from(format!("{text}\n")))),
            refusal: Some(e),
        }
    }
}

/// The app side's end of the reply channel. Sending records the status on
/// the request's `Record` whether or not the client is still there.
pub(crate) struct ReplySender {
    tx: oneshot::Sender<Reply>,
    record: Arc<Record>,
}

impl ReplySender {
    pub(crate) fn new(record: Arc<Record>) -> (ReplySender, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        (ReplySender { tx, record }, rx)
    }

    /// Hands the head over; false when the client is gone. A head that
    /// comes after the stop's time ran out and cut its connection is lost
    /// with its request, as a response cut midway is (`Counted`).
    pub(crate) fn send(self, reply: Reply) -> bool {
        self.record.answered(reply.status.as_u16(), reply.refusal);
        self.record.response_headers(&reply.headers);
        let apps = reply.lost_with_a_cut();
        let sent = self.tx.send(reply).is_ok();
        // Handed over, but not taken before the cut ended its connection,
        // it is lost too (`service::ReplyFuture`'s drop).
        if !sent && apps && crate::server::stop_cut() {
            self.record.cut_by_stop();
        }
        sent
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The body of a response, polled by hyper on the I/O runtime.
pub(crate) enum ResponseBody {
    Empty,
    Full(Option<Bytes>),
    Stream(PipeReceiver),
    File(FileBody),
}

impl Body for ResponseBody {
    type Data = Chunks;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunks>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Empty => Poll::Ready(None),
            ResponseBody::Full(data) => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(Chunks::from(d)))))
            }
            // Everything queued, in one frame: hyper writes it in one call.
            ResponseBody::Stream(rx) => match rx.0.poll_pop(cx, usize::MAX) {
                Poll::Ready(Some(Ok(chunks))) => Poll::Ready(Some(Ok(Frame::data(chunks)))),
                Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(io::Error::other(
                    "the application failed after the response headers were sent",
                )))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ResponseBody::File(file) => file
                .poll_chunk(cx)
                .map(|f| f.map(|f| f.map(|f| f.map_data(Chunks::from)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::Full(data) => data.is_none(),
            ResponseBody::Stream(_) => false,
            ResponseBody::File(file) => file.remaining == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Empty => SizeHint::with_exact(0),
            ResponseBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Stream(_) => SizeHint::default(),
            ResponseBody::File(file) => match file.remaining {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

/// hyper's end of a `Pipe`; dropping it (client gone) releases the producer.
pub(crate) struct PipeReceiver(pub Arc<Pipe>);

impl Drop for PipeReceiver {
    fn drop(&mut self) {
        self.0.close_receiver();
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .finish()
    }
}

/// Marks a `Pipe` finished when the producer side is dropped without
/// finishing (a panic, a lost greenlet): the client sees an aborted body.
pub(crate) struct PipeSender(pub Arc<Pipe>);

impl Drop for PipeSender {
    fn drop(&mut self) {
        self.0.finish(PipeEnd::Aborted);
    }
}
