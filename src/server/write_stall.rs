//! `--body-timeout` on the way out: a client that takes no response byte for that long loses its connection.
//!
//! `ClockedIo` hands every write's outcome to `WriteStall::check`. A write
//! that finds the socket full arms a timer; one that goes through disarms
//! it. Linux reports a full socket writable again only once a good part of
//! its send buffer has drained (about a third for TCP, a quarter for a unix
//! socket), so a client reading slowly but steadily can go longer than the
//! timeout without a write going through. So while the timer runs, the
//! socket's own queue (`SIOCOUTQ`: bytes sent and not yet acknowledged, or
//! not yet read on a unix socket) is looked at every quarter of the limit,
//! and the limit counts from the last look that found it shorter: bytes
//! still in flight when the socket filled are acknowledged in the first
//! moments, and counting from the arming would then give a client that
//! took nothing since about twice the limit. A client that took nothing
//! for the limit (up to a quarter more, the looks' spacing) gets a reset
//! (`SO_LINGER` 0) rather than a FIN queued behind the bytes it will not
//! read, so the kernel frees them at once, and hyper, whose write fails,
//! drops the connection.

use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// One connection's write timer.
pub(crate) struct WriteStall {
    /// `--body-timeout`; `None` waits forever.
    limit: Option<Duration>,
    /// Made at the first stall and kept for the next ones (boxed: most
    /// connections never stall, and an idle one holds only the pointer).
    stalled: Option<Box<Stalled>>,
}

/// The state of a connection's stalls.
struct Stalled {
    timer: Pin<Box<Sleep>>,
    /// While the last write found the socket full: when the client was last
    /// seen taking bytes (or the stall began).
    since: Option<Instant>,
    /// The shortest the socket's queue was seen in this stall.
    queued: usize,
}

impl WriteStall {
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        WriteStall {
            limit,
            stalled: None,
        }
    }

    /// A write's outcome on socket `fd`, with the timeout applied: `Pending`
    /// stays `Pending` until the client took nothing for the whole limit,
    /// then the write fails (and the socket is set to reset on close).
    pub(crate) fn check<T>(
        &mut self,
        fd: RawFd,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !r.is_pending() {
            if let Some(s) = self.stalled.as_mut() {
                s.since = None;
            }
            return r;
        }
        let Some(limit) = self.limit else {
            return r;
        };
        let look = limit / 4;
        let s = self.stalled.get_or_insert_with(|| {
            Box::new(Stalled {
                timer: Box::pin(tokio::time::sleep_until(Instant::now() + look)),
                since: None,
                queued: 0,
            })
        });
        let mut since = match s.since {
            Some(since) => since,
            None => {
                let now = Instant::now();
                s.queued = queued(fd);
                s.timer.as_mut().reset(now + look);
                now
            }
        };
        loop {
            s.since = Some(since);
            if s.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let left = queued(fd);
            if left < s.queued {
                // Slow, but the client took something: the limit counts
                // from here.
                s.queued = left;
                since = now;
            }
            let deadline = since + limit;
            if now < deadline {
                s.timer.as_mut().reset(deadline.min(now + look));
                continue;
            }
            s.since = None;
            reset_on_close(fd);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client took no response byte within --body-timeout",
            )));
        }
    }
}

/// Bytes in `fd`'s send queue not yet taken by the peer (0 if unknown).
pub(super) fn queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int we own; a bad fd is an error return.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        0
    } else {
        usize::try_from(n).unwrap_or(0)
    }
}

/// Makes closing `fd` send a reset and drop its queue.
pub(super) fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one `linger` we own for the given length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Resets `fd`'s connection now, even while another process holds a copy
/// of the socket (one the app forked): a close then sends nothing, but a
/// TCP socket "connected" to `AF_UNSPEC` is disconnected at once, with a
/// reset. A unix socket has no reset; its close is all there is.
pub(super) fn reset_now(fd: RawFd) {
    reset_on_close(fd);
    // SAFETY: an all-zero `sockaddr` is valid; connect reads the given length of it.
    unsafe {
        let mut unspec: libc::sockaddr = std::mem::zeroed();
        unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        libc::connect(
            fd,
            &unspec,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A socket whose queue is full (its peer reads nothing yet), and its
    /// write timer, checked as `ClockedIo` does with each write's outcome.
    struct Stalled {
        a: UnixStream,
        b: UnixStream,
        stall: WriteStall,
    }

    impl Stalled {
        fn new(limit_s: u64) -> io::Result<Stalled> {
            let (a, b) = UnixStream::pair()?;
            a.set_nonblocking(true)?;
            let block = [0u8; 4096];
            while std::io::Write::write(&mut &a, &block).is_ok() {}
            let stall = WriteStall::new(Some(Duration::from_secs(limit_s)));
            Ok(Stalled { a, b, stall })
        }

        /// A write's outcome `r`, through the timer.
        fn check(&mut self, r: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            self.stall.check(self.a.as_raw_fd(), &mut cx, r)
        }

        /// Another write found the socket full: still waiting.
        fn waits(&mut self) -> bool {
            self.check(Poll::Pending).is_pending()
        }

        /// Another write found the socket full: it failed, timed out.
        fn timed_out(&mut self) -> bool {
            matches!(
                self.check(Poll::Pending),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::TimedOut
            )
        }

        /// The peer takes some bytes.
        fn peer_reads(&self) -> io::Result<()> {
            let mut got = [0u8; 8192];
            std::io::Read::read(&mut &self.b, &mut got).map(drop)
        }
    }

    /// A peer that reads nothing: the write times out; one that took bytes:
    /// the limit counts from the look that saw them gone.
    #[tokio::test(start_paused = true)]
    async fn times_out_only_without_progress() -> io::Result<()> {
        let mut s = Stalled::new(5)?;
        assert!(s.waits());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(s.waits());
        // The peer takes some bytes: the look at 6 s sees them gone, and
        // the limit counts from there.
        s.peer_reads()?;
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(s.waits());
        // Nothing more taken: at 12 s, more than the limit after 6 s, the
        // write fails.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(s.timed_out());
        // A write that goes through disarms it.
        assert!(matches!(s.check(Poll::Ready(Ok(()))), Poll::Ready(Ok(()))));
        Ok(())
    }

    /// Bytes taken just after the stall began (those in flight when the
    /// socket filled) do not start the limit over at its end: it counts
    /// from the look that saw them gone, a quarter of the limit in.
    #[tokio::test(start_paused = true)]
    async fn counts_from_the_last_progress_seen() -> io::Result<()> {
        let mut s = Stalled::new(4)?;
        assert!(s.waits());
        s.peer_reads()?;
        // Woken at each look (every second): the one at 1 s sees the bytes
        // gone, and the limit runs from there to 5 s.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(s.waits());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.timed_out());
        Ok(())
    }

    /// A reset reaches the peer at once, with bytes sent before it readable
    /// first, though a copy of the socket stays open (as in a process the
    /// app forked), which keeps a plain close from sending anything.
    #[test]
    fn reset_now_resets_while_a_copy_stays_open() -> io::Result<()> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        server.write_all(b"partial")?;
        let copy = server.try_clone()?;
        reset_now(server.as_raw_fd());
        drop(server);
        client.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 16];
        let n = client.read(&mut buf)?;
        assert_eq!(&buf[..n], b"partial");
        let end = client.read(&mut buf).map_err(|e| e.kind());
        assert_eq!(
            end,
            Err(io::ErrorKind::ConnectionReset),
            "a reset, not an end"
        );
        drop(copy);
        Ok(())
    }
}
