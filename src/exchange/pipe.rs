//! A bounded, single-producer single-consumer queue of response chunks.
//!
//! The app's side (a Python thread, or a greenlet through the hub) pushes
//! chunks without ever blocking inside this module: `try_push` either takes
//! the chunk or registers the caller's waker and hands the chunk back. The
//! socket's side (hyper polling the response body) pops. Waiting is the
//! caller's business (`exec::wait::Waiter`: a blocked thread, or a parked
//! greenlet), which is what lets both execution modes share this code.
//! hyper takes everything queued as one frame (`chunks.rs`), whose bytes
//! count until hyper has written them, so memory is bounded by the capacity
//! plus one chunk. A producer waiting for room is woken once what the
//! response holds (queued and taken but unwritten) is down to a quarter of
//! the capacity, not at the first byte of room: it then queues several
//! chunks per wake-up (a thread switch, or a hub round trip in gevent mode)
//! instead of one.
//! When the socket's side ran dry while the producer was waiting (the client
//! drains faster than the producer's wake-ups refill), the capacity doubles,
//! up to the pipe's maximum: a fast client costs fewer wake-ups. Only once
//! `GROW_AFTER` bytes have gone out, though: until the kernel's socket
//! buffers are full (several MiB), any client looks fast, even one that
//! never reads, and its pipe would grow for nothing. A client that never
//! drains the socket keeps a small pipe; one that takes about as much as
//! the pipe holds each time the socket has room looks fast and grows it;
//! one that was fast for a while and then stops holds the grown pipe until
//! it goes away.

use super::chunks::Chunks;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
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

/// Bytes sent before a pipe may grow: past what the kernel's buffers take
/// at first from a client that does not read (the send buffer autotunes up
/// to `tcp_wmem`'s 4 MiB by default, and a receive buffer grows only while
/// its client reads). A client that reads fast for longer than this and
/// then stops keeps its grown pipe, at most `max_capacity`.
const GROW_AFTER: u64 = 8 * 1024 * 1024;

/// The most chunks one frame takes from the pipe: hyper writes at most 64
/// slices in one `writev`, and holds at most 16 frames.
const MAX_BATCH: usize = 32;

#[derive(Debug)]
pub(crate) struct Pipe {
    state: Mutex<PipeState>,
    /// The most `capacity` grows to.
    max_capacity: usize,
    /// `GROW_AFTER` (smaller in unit tests).
    grow_after: u64,
}

#[derive(Debug, Default)]
struct PipeState {
    chunks: VecDeque<Bytes>,
    queued: usize,
    /// Bytes hyper took but has not written yet (`written`).
    in_flight: usize,
    /// Bytes queued before `try_push` reports `Full`.
    capacity: usize,
    /// `try_push` reported `Full` since the capacity last grew.
    producer_waited: bool,
    end: Option<PipeEnd>,
    /// The response body was dropped (client gone or connection aborted).
    receiver_gone: bool,
    /// hyper's task, waiting for a chunk.
    rx_waker: Option<Waker>,
    /// The app's side, waiting for room.
    tx_waker: Option<Waker>,
    /// Chunks hyper has taken so far: a producer waiting for room sees the
    /// client progress by it even before the quarter-full wake-up.
    popped: u64,
    /// Bytes hyper has taken so far.
    sent: u64,
}

impl Pipe {
    /// A pipe of `capacity` bytes that may grow to `max_capacity`.
    pub(crate) fn new(capacity: usize, max_capacity: usize) -> Self {
        Pipe {
            state: Mutex::new(PipeState {
                capacity,
                ..PipeState::default()
            }),
            max_capacity: max_capacity.max(capacity),
            grow_after: GROW_AFTER,
        }
    }

    /// Chunks taken by the socket side so far (a measure of the client's progress).
    pub(crate) fn popped(&self) -> u64 {
        self.state.lock().popped
    }

    pub(crate) fn try_push(&self, chunk: Bytes, waker: &Waker) -> Push {
        let rx = {
            let mut st = self.state.lock();
            if st.receiver_gone || st.end.is_some() {
                return Push::Closed;
            }
            if st.queued + st.in_flight >= st.capacity {
                st.tx_waker = Some(waker.clone());
                st.producer_waited = true;
                return Push::Full(chunk);
            }
            let rx = st.rx_waker.take();
            if std::mem::take(&mut st.producer_waited) && rx.is_some() && st.sent >= self.grow_after
            {
                // Back from waiting for room, the producer finds that the
                // socket's side ran dry meanwhile.
                st.capacity = st.capacity.saturating_mul(2).min(self.max_capacity);
            }
            st.queued += chunk.len();
            st.chunks.push_back(chunk);
            rx
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

    /// The socket side: the queued chunks, up to `max_bytes` (at least
    /// one, and at most `MAX_BATCH` of them) in one frame, the end of the
    /// body, or `Pending` with hyper's waker registered. hyper writes a
    /// frame's chunks in one `writev` (`chunks.rs`).
    /// A frame's bytes count against the capacity until hyper has written
    /// them (`written`): what a response holds stays within the capacity
    /// plus one chunk, however much hyper takes at once. The server asks
    /// for everything (`usize::MAX`); tests take one chunk at a time.
    pub(crate) fn poll_pop(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        max_bytes: usize,
    ) -> Poll<Option<Result<Chunks, PipeEnd>>> {
        let mut st = self.state.lock();
        if st.chunks.is_empty() {
            return match st.end {
                Some(PipeEnd::Done) => Poll::Ready(None),
                Some(PipeEnd::Aborted) => Poll::Ready(Some(Err(PipeEnd::Aborted))),
                None => {
                    st.rx_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            };
        }
        let mut batch = Chunks::from_pipe(self.clone());
        let (mut taken, mut count) = (0, 0);
        while taken < max_bytes.max(1) && count < MAX_BATCH {
            let Some(chunk) = st.chunks.pop_front() else {
                break;
            };
            taken += chunk.len();
            count += 1;
            batch.push(chunk);
        }
        st.queued -= taken;
        st.in_flight += taken;
        st.popped += count as u64;
        st.sent += taken as u64;
        // The lock goes before the frame can: its drop takes the lock.
        drop(st);
        Poll::Ready(Some(Ok(batch)))
    }

    /// hyper wrote `n` bytes of a frame this pipe gave it (or dropped them):
    /// a producer waiting for room is woken once what the response holds is
    /// down to a quarter of the capacity.
    pub(crate) fn written(&self, n: usize) {
        let tx = {
            let mut st = self.state.lock();
            st.in_flight = st.in_flight.saturating_sub(n);
            if st.queued + st.in_flight <= st.capacity / 4 {
                st.tx_waker.take()
            } else {
                None
            }
        };
        if let Some(w) = tx {
            w.wake();
        }
    }

    /// Called when the response body is dropped: wakes a waiting producer.
    pub(crate) fn close_receiver(&self) {
        let tx = {
            let mut st = self.state.lock();
            st.receiver_gone = true;
            st.chunks.clear();
            st.queued = 0;
            st.in_flight = 0;
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
    use bytes::Buf;
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

    /// A waker that counts its wake-ups.
    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    /// Pushes each chunk; every push must be taken.
    fn push_all(pipe: &Pipe, chunks: &[&'static [u8]], waker: &Waker) {
        for chunk in chunks {
            assert!(matches!(
                pipe.try_push(Bytes::from_static(chunk), waker),
                Push::Sent
            ));
        }
    }

    #[test]
    fn producer_woken_only_when_the_queue_is_low() {
        let pipe = Arc::new(Pipe::new(8, 8));
        let (count, waker) = counting();
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
            assert!(matches!(
                pipe.poll_pop(&mut cx, 1),
                Poll::Ready(Some(Ok(_)))
            ));
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                0,
                "{left} bytes left: not yet"
            );
        }
        assert!(matches!(
            pipe.poll_pop(&mut cx, 1),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "2 bytes left: woken");
        assert!(matches!(
            pipe.poll_pop(&mut cx, 1),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
    }

    /// Pushes 1-byte chunks until the pipe is full; how many it took.
    fn fill(pipe: &Pipe, waker: &Waker) -> usize {
        (0..)
            .take_while(|_| matches!(pipe.try_push(Bytes::from_static(b"a"), waker), Push::Sent))
            .count()
    }

    /// Pops until the pipe is empty; with `starve`, once more, so the
    /// socket's side waits for a chunk.
    fn drain(pipe: &Arc<Pipe>, cx: &mut Context<'_>, starve: bool) {
        while pipe.state.lock().queued > 0 {
            assert!(matches!(pipe.poll_pop(cx, 1), Poll::Ready(Some(Ok(_)))));
        }
        if starve {
            assert!(pipe.poll_pop(cx, 1).is_pending());
        }
    }

    #[test]
    fn grows_only_when_the_socket_side_ran_dry_while_the_producer_waited() {
        let mut pipe = Pipe::new(8, 32);
        pipe.grow_after = 20;
        let pipe = Arc::new(pipe);
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(
            pipe.poll_pop(&mut cx, 1).is_pending(),
            "hyper waits from the start"
        );
        assert_eq!(
            fill(&pipe, &waker),
            8,
            "a first push to a waiting socket does not grow it"
        );
        // A slow client: the producer is back before the queue is empty.
        while pipe.state.lock().queued > 2 {
            assert!(matches!(
                pipe.poll_pop(&mut cx, 1),
                Poll::Ready(Some(Ok(_)))
            ));
        }
        assert_eq!(
            fill(&pipe, &waker),
            6,
            "back with the queue not empty: no growth"
        );
        // Dry while the producer waited, but only 14 bytes sent: the
        // kernel's buffers would take that much from any client.
        drain(&pipe, &mut cx, true);
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"a"), &waker),
            Push::Sent
        ));
        assert_eq!(pipe.state.lock().capacity, 8, "not before grow_after");
        assert_eq!(fill(&pipe, &waker), 7);
        // A fast client: the socket ran dry while the producer waited.
        drain(&pipe, &mut cx, true);
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"a"), &waker),
            Push::Sent
        ));
        assert_eq!(pipe.state.lock().capacity, 16);
        // Dry again, but the producer had not waited since: no growth.
        drain(&pipe, &mut cx, true);
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"a"), &waker),
            Push::Sent
        ));
        assert_eq!(pipe.state.lock().capacity, 16);
        assert_eq!(fill(&pipe, &waker), 15);
        for want in [32, 32] {
            drain(&pipe, &mut cx, true);
            assert_eq!(fill(&pipe, &waker), want, "doubles up to its maximum");
        }
        // Thread mode's pipe does not grow.
        let fixed = Arc::new(Pipe::new(8, 8));
        assert_eq!(fill(&fixed, &waker), 8);
        drain(&fixed, &mut cx, true);
        assert_eq!(fill(&fixed, &waker), 8);
    }

    /// hyper takes everything queued in one frame, and the frame's bytes
    /// count against the capacity until hyper has written them.
    #[test]
    fn a_frame_takes_the_queue_and_counts_until_written() {
        let pipe = Arc::new(Pipe::new(8, 8));
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        push_all(&pipe, &[b"ab", b"cd", b"ef", b"gh"], &waker);
        let Poll::Ready(Some(Ok(mut frame))) = pipe.poll_pop(&mut cx, usize::MAX) else {
            panic!("expected a frame");
        };
        assert_eq!((frame.count(), frame.remaining()), (4, 8));
        assert_eq!(pipe.popped(), 4);
        assert!(
            matches!(
                pipe.try_push(Bytes::from_static(b"ij"), &waker),
                Push::Full(_)
            ),
            "taken but not written still counts"
        );
        frame.advance(5);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "3 bytes held: not yet");
        frame.advance(1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "2 bytes held: woken");
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"ij"), &waker),
            Push::Sent
        ));
        drop(frame);
        assert_eq!(
            pipe.state.lock().in_flight,
            0,
            "a frame dropped half written gives its bytes back"
        );
        let Poll::Ready(Some(Ok(frame))) = pipe.poll_pop(&mut cx, 1) else {
            panic!("expected a frame");
        };
        assert_eq!(
            frame.count(),
            1,
            "max_bytes bounds a frame, one chunk at least"
        );
    }

    #[test]
    fn popped_counts_what_the_socket_side_took() {
        let pipe = Arc::new(Pipe::new(1024, 1024));
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        assert_eq!(pipe.popped(), 0);
        push_all(&pipe, &[b"ab", b"cd", b"ef"], &waker);
        assert!(matches!(
            pipe.poll_pop(&mut cx, 1),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(matches!(
            pipe.poll_pop(&mut cx, 1),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(
            pipe.popped(),
            2,
            "a slow client's progress, seen before any wake-up"
        );
    }

    #[test]
    fn full_then_room_wakes_producer() {
        let pipe = Arc::new(Pipe::new(4, 4));
        let (count, waker) = counting();
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
        assert!(matches!(
            pipe.poll_pop(&mut cx, 1),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "producer woken once room is made"
        );
        assert!(matches!(pipe.poll_pop(&mut cx, 1), Poll::Pending));
        pipe.finish(PipeEnd::Done);
        assert!(matches!(pipe.poll_pop(&mut cx, 1), Poll::Ready(None)));
    }

    #[test]
    fn abort_and_receiver_gone() {
        let pipe = Arc::new(Pipe::new(4, 4));
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        pipe.finish(PipeEnd::Aborted);
        assert!(matches!(
            pipe.poll_pop(&mut cx, 1),
            Poll::Ready(Some(Err(PipeEnd::Aborted)))
        ));
        let pipe = Arc::new(Pipe::new(4, 4));
        pipe.close_receiver();
        assert!(pipe.is_closed());
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"a"), &waker),
            Push::Closed
        ));
    }
}
