//! The hyper service: a request head becomes a `Job`, the executor's `Reply` becomes the response.
//!
//! `call` does no I/O and no Python: it queues the job and returns a future
//! that waits for the reply. The body is not touched here; it travels with
//! the job so the app decides whether and when it is read. If the app side
//! drops the reply unsent (a bug, a lost greenlet), the client gets a 500.

use crate::error::RequestError;
use crate::exec::{Executor, Job};
use crate::limits::HeadLimits;
use crate::wsgi::environ::ConnInfo;
use crate::wsgi::response::{Reply, ResponseBody};
use http::StatusCode;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

#[derive(Clone)]
pub(crate) struct Service {
    pub exec: Arc<Executor>,
    pub conn: Arc<ConnInfo>,
    /// Checked by `head::check_head` before a job is made.
    pub head_limits: HeadLimits,
}

impl hyper::service::Service<http::Request<Incoming>> for Service {
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = ReplyFuture;

    fn call(&self, req: http::Request<Incoming>) -> ReplyFuture {
        let (head, body) = req.into_parts();
        if let Err(e) = super::head::check_head(&head, &self.head_limits) {
            crate::log::error::write(
                crate::log::error::Level::Debug,
                &format!("Refused {} {}: {e}", head.method, head.uri),
            );
            return ReplyFuture::Ready(Some(Box::new(Reply::error(e.status(), true))));
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            head,
            body,
            conn: self.conn.clone(),
            reply: tx,
            received: Instant::now(),
            received_at: SystemTime::now(),
        };
        if self.exec.submit(job) {
            ReplyFuture::Waiting(rx)
        } else {
            let reply = Reply::error(RequestError::Overloaded.status(), true);
            ReplyFuture::Ready(Some(Box::new(reply)))
        }
    }
}

/// Waits for the app's reply without boxing a future per request.
pub(crate) enum ReplyFuture {
    Waiting(oneshot::Receiver<Reply>),
    Ready(Option<Box<Reply>>),
}

impl Future for ReplyFuture {
    type Output = Result<http::Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = match self.get_mut() {
            ReplyFuture::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(reply)) => reply,
                Poll::Ready(Err(_)) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, true),
            },
            ReplyFuture::Ready(r) => r
                .take()
                .map(|b| *b)
                .unwrap_or_else(|| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, true)),
        };
        Poll::Ready(Ok(reply.into_response()))
    }
}
