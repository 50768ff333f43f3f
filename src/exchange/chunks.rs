//! A response body frame made of several chunks, sent without joining them.
//!
//! hyper queues each body frame as it is and writes its queue with one
//! `writev`, but it takes a new frame only while its queue holds less than
//! its buffer bound (`max_buf_size`, which is also the 64 KiB bound of an
//! upload's read-ahead). With one app chunk per frame, a download went out
//! in one `writev` per 64 KiB chunk; the kernel's send path costs markedly
//! less per byte in larger writes. A `Chunks` frame carries every chunk the
//! response pipe holds at once, and its `chunks_vectored` hands each as its
//! own slice, so hyper writes them together in one call, with no copy.
//! The pipe still counts a frame's bytes until hyper has written them
//! (`Pipe::written`), so what a response holds stays as bounded as before.

use super::pipe::Pipe;
use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

/// Chunks in order; `first` is the one being written. Invariant: `first`
/// is empty only when everything is (no empty chunk is ever kept).
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    first: Bytes,
    rest: VecDeque<Bytes>,
    remaining: usize,
    /// The pipe these came from, told of every byte written or dropped.
    pipe: Option<Arc<Pipe>>,
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // Written or not, these bytes no longer count against the pipe.
        if let Some(pipe) = &self.pipe {
            if self.remaining > 0 {
                pipe.written(self.remaining);
            }
        }
    }
}

impl Chunks {
    /// An empty frame whose chunks `pipe` handed out.
    pub(crate) fn from_pipe(pipe: Arc<Pipe>) -> Self {
        Chunks {
            first: Bytes::new(),
            rest: VecDeque::new(),
            remaining: 0,
            pipe: Some(pipe),
        }
    }

    /// `n` bytes were written: the pipe may take more.
    fn consumed(&mut self, n: usize) {
        let n = n.min(self.remaining);
        self.remaining -= n;
        if let (Some(pipe), true) = (&self.pipe, n > 0) {
            pipe.written(n);
        }
    }

    /// Appends a chunk (an empty one is dropped).
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.remaining += chunk.len();
        if self.first.is_empty() {
            self.first = chunk;
        } else {
            self.rest.push_back(chunk);
        }
    }

    /// How many chunks are left (partly written ones count).
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        usize::from(!self.first.is_empty()) + self.rest.len()
    }
}

impl From<Bytes> for Chunks {
    fn from(chunk: Bytes) -> Self {
        let mut chunks = Chunks::default();
        chunks.push(chunk);
        chunks
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        &self.first
    }

    fn advance(&mut self, mut cnt: usize) {
        // hyper advances by what a write took, never past the end; should
        // anything ask for more, what is there is used up and no more.
        self.consumed(cnt);
        while cnt > 0 && !self.first.is_empty() {
            let n = cnt.min(self.first.len());
            self.first.advance(n);
            cnt -= n;
            if self.first.is_empty() {
                self.first = self.rest.pop_front().unwrap_or_default();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in std::iter::once(&self.first).chain(self.rest.iter()) {
            if n == dst.len() || chunk.is_empty() {
                break;
            }
            dst[n] = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        // hyper's HTTP/1 write path never asks; past the end, what is there.
        debug_assert!(len <= self.remaining, "copy_to_bytes past the end");
        if len <= self.first.len() {
            // The common case costs no copy: a slice of the first chunk.
            let out = self.first.split_to(len);
            self.consumed(len);
            if self.first.is_empty() {
                self.first = self.rest.pop_front().unwrap_or_default();
            }
            return out;
        }
        let mut out = bytes::BytesMut::with_capacity(len);
        out.extend_from_slice(&self.first);
        let mut left = len - self.first.len();
        self.advance(self.first.len());
        while left > 0 && !self.first.is_empty() {
            let n = left.min(self.first.len());
            out.extend_from_slice(&self.first[..n]);
            self.advance(n);
            left -= n;
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(parts: &[&'static [u8]]) -> Chunks {
        let mut chunks = Chunks::default();
        for p in parts {
            chunks.push(Bytes::from_static(p));
        }
        chunks
    }

    #[test]
    fn hands_every_chunk_as_its_own_slice() {
        let chunks = of(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(chunks.remaining(), 6);
        assert_eq!(chunks.count(), 3, "the empty chunk is not kept");
        let mut slices = [IoSlice::new(&[]); 8];
        let n = chunks.chunks_vectored(&mut slices);
        let got: Vec<&[u8]> = slices[..n].iter().map(|s| &**s).collect();
        assert_eq!(got, [&b"ab"[..], b"cde", b"f"]);
        let mut two = [IoSlice::new(&[]); 2];
        assert_eq!(chunks.chunks_vectored(&mut two), 2, "as many as fit");
    }

    #[test]
    fn advances_across_chunks_as_partial_writes_do() {
        let mut chunks = of(&[b"ab", b"cde", b"f"]);
        chunks.advance(1);
        assert_eq!(chunks.chunk(), b"b");
        chunks.advance(2);
        assert_eq!(chunks.chunk(), b"de");
        assert_eq!(chunks.remaining(), 3);
        chunks.advance(3);
        assert_eq!(chunks.remaining(), 0);
        assert!(chunks.chunk().is_empty());
        assert!(!chunks.has_remaining());
        chunks.advance(5);
        assert_eq!(chunks.remaining(), 0, "past the end uses up nothing more");
    }

    #[test]
    fn reads_back_what_went_in_whichever_way_it_is_taken() {
        let mut chunks = of(&[b"hello ", b"big ", b"world"]);
        assert_eq!(&chunks.copy_to_bytes(3)[..], b"hel");
        assert_eq!(&chunks.copy_to_bytes(6)[..], b"lo big");
        let mut rest = Vec::new();
        while chunks.has_remaining() {
            let c = chunks.chunk().to_vec();
            rest.extend_from_slice(&c);
            chunks.advance(c.len());
        }
        assert_eq!(rest, b" world");
    }
}
