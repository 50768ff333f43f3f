//! Graceful shutdown that never closes a connection before it has read its request.
//!
//! hyper's `graceful_shutdown` closes, unanswered, a connection on which
//! nothing has been read yet (hyper's `has_initial_read_write_state`). On a
//! stop or a HUP reload, that is exactly a connection the worker has just
//! accepted, or taken off the queue in `drain.rs`, whose request is already
//! on its way: a proxy would see its request dropped. So a connection is
//! handed to the graceful watcher only once its first bytes were read (or
//! it ended): before that it is driven alone, still counted by the watcher
//! it holds, so the drain waits for it. A client that connects and sends
//! nothing stays until hyper's head timeout or `--graceful-timeout`,
//! whichever comes first. Counting and signalling connections is
//! hyper-util's `GracefulShutdown`, used by `mod.rs`.

use hyper_util::server::graceful::{GracefulConnection, Watcher};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An IO that notes its first read (bytes or end of stream).
pub(crate) struct FirstRead<I> {
    io: I,
    read: Arc<AtomicBool>,
}

impl<I> FirstRead<I> {
    /// The wrapped IO and the flag its first read sets.
    pub(crate) fn new(io: I) -> (FirstRead<I>, Arc<AtomicBool>) {
        let read = Arc::new(AtomicBool::new(false));
        (
            FirstRead {
                io,
                read: read.clone(),
            },
            read,
        )
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstRead<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if polled.is_ready() {
            this.read.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstRead<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Drives `conn` alone until its first read, then under `watcher`.
pub(crate) async fn serve<C>(mut conn: C, read: &AtomicBool, watcher: Watcher) -> C::Output
where
    C: GracefulConnection + Unpin,
{
    let first = poll_fn(|cx| match Pin::new(&mut conn).poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending if read.load(Ordering::Relaxed) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await;
    match first {
        Some(out) => out,
        None => watcher.watch(conn).await,
    }
}
