//! A bounded, single-producer single-consumer queue of response chunks.
//!
//! The app's side (a Python thread, or a greenlet through the hub) pushes
//! chunks without ever blocking inside this module: `try_push` either takes
//! the chunk or registers the caller's waker and hands the chunk back. The
//! socket's side (hyper polling the response body) pops. Waiting is the
//! caller's business (`exec::wait::Waiter`: a blocked thread, or a parked
//! greenlet), which is what lets both execution modes share this code.
//! Memory is bounded by the capacity plus one chunk. A producer waiting for
//! room is woken once the queue is down to a quarter of the capacity, not
//! at the first byte of room: it then queues several chunks per wake-up
//! (a thread switch, or a hub round trip in gevent mode) instead of one.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

/// How the producer ended the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeEnd {
    /// All chunks were pushed: the body is complete.
    Done,
    /// The app failed mid-body: the connection must be aborted so the client
    /// never mistakes a truncated body for a complete one.
    Aborted,
}

/// Outcome of `try_push`.
#[derive(Debug)]
pub(crate) enum Push {
    Sent,
    /// The queue is full; the chunk is handed back and the waker will be
    /// woken when there is room (or the receiver goes away).
    Full(Bytes),
    /// The client is gone: nothing more will be sent.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Pipe {
    state: Mutex<PipeState>,
    /// Bytes queued before `try_push` reports `Full`.
    capacity: usize,
}

#[derive(Debug, Default)]
struct PipeState {
    chunks: VecDeque<Bytes>,
    queued: usize,
    end: Option<PipeEnd>,
    /// The response body was dropped (client gone or connection aborted).
    receiver_gone: bool,
    /// hyper's task, waiting for a chunk.
    rx_waker: Option<Waker>,
    /// The app's side, waiting for room.
    tx_waker: Option<Waker>,
    /// An abort was held back once so hyper could flush what was sent before it.
    abort_held: bool,
    /// Chunks hyper has taken so far: a producer waiting for room sees the
    /// client progress by it even before the quarter-full wake-up.
    popped: u64,
}

impl Pipe {
    pub(crate) fn new(capacity: usize) -> Self {
        Pipe {
            state: Mutex::new(PipeState::default()),
            capacity,
        }
    }

    /// Chunks taken by the socket side so far (a measure of the client's progress).
    pub(crate) fn popped(&self) -> u64 {
        self.state.lock().popped
    }

    /// Queued bytes at or below which a producer waiting for room is woken.
    fn wake_at(&self) -> usize {
        self.capacity / 4
    }

    pub(crate) fn try_push(&self, chunk: Bytes, waker: &Waker) -> Push {
        let rx = {
            let mut st = self.state.lock();
            if st.receiver_gone || st.end.is_some() {
                return Push::Closed;
            }
            if st.queued >= self.capacity {
                st.tx_waker = Some(waker.clone());
                return Push::Full(chunk);
            }
            st.queued += chunk.len();
            st.chunks.push_back(chunk);
            st.rx_waker.take()
        };
        if let Some(w) = rx {
            w.wake();
        }
        Push::Sent
    }

    /// Ends the stream; later pushes report `Closed`.
    pub(crate) fn finish(&self, end: PipeEnd) {
        let rx = {
            let mut st = self.state.lock();
            if st.end.is_none() {
                st.end = Some(end);
            }
            st.rx_waker.take()
        };
        if let Some(w) = rx {
            w.wake();
        }
    }

    /// Whether the client side is gone (pushing is pointless).
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().receiver_gone
    }

    /// The socket side: the next chunk, the end of the body, or `Pending`
    /// with hyper's waker registered.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, PipeEnd>>> {
        let (out, tx) = {
            let mut st = self.state.lock();
            match st.chunks.pop_front() {
                Some(chunk) => {
                    st.queued -= chunk.len();
                    st.popped += 1;
                    let tx = if st.queued <= self.wake_at() {
                        st.tx_waker.take()
                    } else {
                        None
                    };
                    (Poll::Ready(Some(Ok(chunk))), tx)
                }
                None => match st.end {
                    Some(PipeEnd::Done) => (Poll::Ready(None), None),
                    Some(PipeEnd::Aborted) if !st.abort_held => {
                        // hyper drops its write buffer when a body fails:
                        // yield once so the bytes the app already produced
                        // are flushed before the connection is aborted.
                        st.abort_held = true;
                        cx.waker().wake_by_ref();
                        (Poll::Pending, None)
                    }
                    Some(PipeEnd::Aborted) => (Poll::Ready(Some(Err(PipeEnd::Aborted))), None),
                    None => {
                        st.rx_waker = Some(cx.waker().clone());
                        (Poll::Pending, None)
                    }
                },
            }
        };
        if let Some(w) = tx {
            w.wake();
        }
        out
    }

    /// Called when the response body is dropped: wakes a waiting producer.
    pub(crate) fn close_receiver(&self) {
        let tx = {
            let mut st = self.state.lock();
            st.receiver_gone = true;
            st.chunks.clear();
            st.queued = 0;
            st.tx_waker.take()
        };
        if let Some(w) = tx {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn producer_woken_only_when_the_queue_is_low() {
        let pipe = Pipe::new(8);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..4 {
            assert!(matches!(
                pipe.try_push(Bytes::from_static(b"ab"), &waker),
                Push::Sent
            ));
        }
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"cd"), &waker),
            Push::Full(_)
        ));
        for left in [6, 4] {
            assert!(matches!(pipe.poll_pop(&mut cx), Poll::Ready(Some(Ok(_)))));
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                0,
                "{left} bytes left: not yet"
            );
        }
        assert!(matches!(pipe.poll_pop(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "2 bytes left: woken");
        assert!(matches!(pipe.poll_pop(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
    }

    #[test]
    fn popped_counts_what_the_socket_side_took() {
        let pipe = Pipe::new(1024);
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        assert_eq!(pipe.popped(), 0);
        for chunk in [&b"ab"[..], b"cd", b"ef"] {
            assert!(matches!(
                pipe.try_push(Bytes::from_static(chunk), &waker),
                Push::Sent
            ));
        }
        assert!(matches!(pipe.poll_pop(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(pipe.poll_pop(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(
            pipe.popped(),
            2,
            "a slow client's progress, seen before any wake-up"
        );
    }

    #[test]
    fn full_then_room_wakes_producer() {
        let pipe = Pipe::new(4);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"abcde"), &waker),
            Push::Sent
        ));
        let back = match pipe.try_push(Bytes::from_static(b"x"), &waker) {
            Push::Full(b) => b,
            other => panic!("expected Full, got {other:?}"),
        };
        assert_eq!(&back[..], b"x");
        assert!(matches!(pipe.poll_pop(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "producer woken once room is made"
        );
        assert!(matches!(pipe.poll_pop(&mut cx), Poll::Pending));
        pipe.finish(PipeEnd::Done);
        assert!(matches!(pipe.poll_pop(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn abort_and_receiver_gone() {
        let pipe = Pipe::new(4);
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        pipe.finish(PipeEnd::Aborted);
        assert!(
            matches!(pipe.poll_pop(&mut cx), Poll::Pending),
            "one yield to flush first"
        );
        assert!(matches!(
            pipe.poll_pop(&mut cx),
            Poll::Ready(Some(Err(PipeEnd::Aborted)))
        ));
        let pipe = Pipe::new(4);
        pipe.close_receiver();
        assert!(pipe.is_closed());
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"a"), &waker),
            Push::Closed
        ));
    }
}
