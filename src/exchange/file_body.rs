//! A `wsgi.file_wrapper` body: a regular file read from its descriptor, off the GIL.
//!
//! Blocks of `BLOCK_MIN`..`BLOCK_MAX` bytes are read at an explicit offset
//! (`pread`, so the Python file object's own position is left alone). A
//! block already in the page cache is read on the I/O thread itself with
//! `RWF_NOWAIT`, which never waits for the disk; a block that is not (or a
//! kernel without the flag) is read on tokio's blocking pool, so a cold
//! file never stalls the other connections of the worker. Each block is
//! read straight into the buffer handed to hyper: one copy, kernel to user.
//! The length is the one the app declared or the file's size, and never
//! more than that is read; a file shorter than its declared length fails
//! the body, which aborts the connection (after what was read is flushed,
//! `server/end.rs` `Counted`). Choosing this body is
//! `wsgi/start_response`'s job; the socket write is hyper's.
//!
//! Why not `sendfile`: hyper frames the body (it counts the bytes of a
//! `Content-Length` body, writes chunk sizes otherwise, and owns the write
//! buffer where the head waits), and bytes written to the socket behind its
//! back would have to be smuggled past that framing through the socket
//! wrapper. That would trade one copy for a path where a slip sends the
//! wrong bytes as a well-framed response; this read path keeps hyper's
//! framing intact and costs one user-space copy per block.

use bytes::Bytes;
use http_body::Frame;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// Smallest block read at once, whatever `blksize` the app suggested: a
/// smaller one costs a system call each way for little data.
const BLOCK_MIN: usize = 64 * 1024;
/// Largest block: the memory one file response holds at a time.
const BLOCK_MAX: usize = 1024 * 1024;

pub(crate) struct FileBody {
    file: Arc<File>,
    /// Where the next block starts in the file.
    offset: u64,
    /// Bytes still to send when the length is known (declared by the app
    /// or taken from the file's size); never more than this is sent.
    pub(crate) remaining: Option<u64>,
    block: usize,
    /// A read the page cache could not answer, running on the blocking pool.
    pending: Option<JoinHandle<io::Result<Vec<u8>>>>,
    /// No blocking thread could be started: reads happen in place.
    in_place: bool,
}

impl FileBody {
    /// A body that sends `file` from its current position: `remaining`
    /// bytes, or to its end when `None`.
    pub(crate) fn new(file: File, remaining: Option<u64>, block: usize) -> Self {
        use std::io::Seek;
        let mut f = &file;
        let offset = f.stream_position().unwrap_or(0);
        FileBody {
            file: Arc::new(file),
            offset,
            remaining,
            block: block.clamp(BLOCK_MIN, BLOCK_MAX),
            pending: None,
            in_place: false,
        }
    }

    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let want = match self.remaining {
            Some(0) => return Poll::Ready(None),
            Some(n) => self.block.min(usize::try_from(n).unwrap_or(usize::MAX)),
            None => self.block,
        };
        let read = match self.pending.as_mut() {
            Some(job) => match Pin::new(job).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    self.pending = None;
                    r.unwrap_or_else(|e| Err(io::Error::other(e)))
                }
            },
            None => match read_cached(&self.file, self.offset, want) {
                Some(r) => r,
                // No thread to read on, found before (QA, session 30: the
                // panic cut the response at 0 bytes): read here, blocking
                // this I/O thread, for the rest of the body.
                None if self.in_place => read_at(&self.file, self.offset, want, 0),
                None => {
                    let (file, offset) = (self.file.clone(), self.offset);
                    match crate::exec::try_spawn_blocking(move || read_at(&file, offset, want, 0)) {
                        Some(job) => {
                            self.pending = Some(job);
                            return self.poll_chunk(cx);
                        }
                        None => {
                            self.in_place = true;
                            read_at(&self.file, self.offset, want, 0)
                        }
                    }
                }
            },
        };
        Poll::Ready(self.take(read))
    }

    /// Accounts for a finished read and makes its frame.
    fn take(&mut self, read: io::Result<Vec<u8>>) -> Option<Result<Frame<Bytes>, io::Error>> {
        let data = match read {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        if data.is_empty() {
            // End of file: an error if the app declared more than this.
            return self.remaining.map(|_| {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than the declared Content-Length",
                ))
            });
        }
        let n = data.len() as u64;
        self.offset += n;
        if let Some(r) = self.remaining.as_mut() {
            *r = r.saturating_sub(n);
        }
        Some(Ok(Frame::data(Bytes::from(data))))
    }
}

/// A read that does not wait for the disk: `None` when the block is not in
/// the page cache (or the kernel cannot tell), so the caller reads it on
/// the blocking pool instead.
fn read_cached(file: &File, offset: u64, want: usize) -> Option<io::Result<Vec<u8>>> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        match read_at(file, offset, want, libc::RWF_NOWAIT) {
            // Data that was cached (possibly less than asked), or 0 at the end.
            Ok(d) => Some(Ok(d)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            // EOPNOTSUPP / EINVAL: this file or kernel has no RWF_NOWAIT.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => None,
            Err(e) => Some(Err(e)),
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (file, offset, want);
        None
    }
}

/// Reads up to `want` bytes at `offset` into a new buffer (`flags` for
/// `preadv2`; 0 is a plain `pread`). Retries on `EINTR`.
fn read_at(file: &File, offset: u64, want: usize, flags: libc::c_int) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    loop {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: want,
        };
        // SAFETY: `iov` points at `want` bytes of `buf`'s spare capacity,
        // which the kernel may write; the descriptor is open while `file`
        // is borrowed.
        let n = unsafe { preadv2(file.as_raw_fd(), &iov, off, flags) };
        if n >= 0 {
            let n = usize::try_from(n).unwrap_or(0).min(want);
            // SAFETY: the kernel initialised the first `n` bytes.
            unsafe { buf.set_len(n) };
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `preadv2` where the C library has it, else `pread` (flags must be 0 then).
///
/// # Safety
/// `iov` must describe writable memory and `fd` must be open.
unsafe fn preadv2(
    fd: libc::c_int,
    iov: &libc::iovec,
    off: libc::off_t,
    flags: libc::c_int,
) -> libc::ssize_t {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: forwarded from the caller.
        unsafe { libc::preadv2(fd, iov, 1, off, flags) }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = flags;
        // SAFETY: forwarded from the caller.
        unsafe { libc::pread(fd, iov.iov_base, iov.iov_len, off) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::{Seek, SeekFrom, Write};

    fn data(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn temp_file(bytes: &[u8]) -> io::Result<File> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "siesta-file-body-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        f.write_all(bytes)?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }

    async fn collect(body: FileBody) -> io::Result<Vec<u8>> {
        Ok(crate::exchange::reply::ResponseBody::File(body)
            .collect()
            .await?
            .to_bytes()
            .to_vec())
    }

    #[tokio::test]
    async fn whole_file_from_its_position_and_clipped() -> io::Result<()> {
        let bytes = data(1_000_003);
        // To the end of the file (no length known).
        let got = collect(FileBody::new(temp_file(&bytes)?, None, 8192)).await?;
        assert_eq!(got, bytes);
        // From where the file stands, for a declared length shorter than the rest.
        let mut f = temp_file(&bytes)?;
        f.seek(SeekFrom::Start(1000))?;
        let got = collect(FileBody::new(f, Some(70_000), 8192)).await?;
        assert_eq!(got, &bytes[1000..71_000]);
        // The file's own position is left where it was.
        let f = temp_file(&bytes)?;
        let dup = f.try_clone()?;
        collect(FileBody::new(f, Some(5000), 8192)).await?;
        assert_eq!((&dup).stream_position()?, 0);
        Ok(())
    }

    #[tokio::test]
    async fn file_shorter_than_declared_fails() -> io::Result<()> {
        let bytes = data(10_000);
        let err = collect(FileBody::new(temp_file(&bytes)?, Some(20_000), 8192)).await;
        assert_eq!(
            err.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::UnexpectedEof)
        );
        Ok(())
    }

    #[test]
    fn blocking_read_and_cached_read_agree() -> io::Result<()> {
        let bytes = data(200_000);
        let f = temp_file(&bytes)?;
        let plain = read_at(&f, 100, 65_536, 0)?;
        assert_eq!(plain, &bytes[100..100 + 65_536]);
        if let Some(cached) = read_cached(&f, 100, 65_536) {
            assert_eq!(cached?, plain);
        }
        assert!(read_at(&f, 200_000, 10, 0)?.is_empty(), "end of file");
        Ok(())
    }
}
