//! The request-body buffer behind `wsgi.input`: pure byte logic, no I/O, no Python.
//!
//! The network side appends the chunks hyper delivers; the reading side takes
//! exactly what `read(n)`, `readline(limit)` and friends ask for, across chunk
//! boundaries, without copying when a whole chunk (or a prefix of one) is
//! enough. Deciding *when* to fetch more bytes from the socket is left to
//! `input.rs`; this module only answers "is what is buffered enough?".

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Bytes received from the client and not yet handed to the app.
#[derive(Debug, Default)]
pub(crate) struct BodyBuffer {
    /// Received chunks in order; the front one may be partly consumed.
    chunks: VecDeque<Bytes>,
    /// Total bytes in `chunks`, so `len()` is O(1).
    len: usize,
}

impl BodyBuffer {
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes up to `n` bytes from the front (fewer only when fewer are buffered).
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        if n == 0 {
            return Bytes::new();
        }
        // Fast path: the front chunk alone satisfies the request, no copy.
        if let Some(front) = self.chunks.front_mut() {
            if front.len() >= n {
                let out = front.split_to(n);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
                self.len -= n;
                return out;
            }
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let want = n - out.len();
            if front.len() <= want {
                out.extend_from_slice(front);
                self.chunks.pop_front();
            } else {
                out.extend_from_slice(&front.split_to(want));
            }
        }
        self.len -= out.len();
        out.freeze()
    }

    /// Takes everything buffered.
    pub(crate) fn take_all(&mut self) -> Bytes {
        self.take(self.len)
    }

    /// Length of the first line (including its `\n`) if one is complete
    /// within the first `limit` bytes; `None` if more bytes are needed.
    pub(crate) fn line_len(&self, limit: usize) -> Option<usize> {
        let mut seen = 0;
        for chunk in &self.chunks {
            let window = &chunk[..chunk.len().min(limit - seen)];
            if let Some(pos) = window.iter().position(|&b| b == b'\n') {
                return Some(seen + pos + 1);
            }
            seen += window.len();
            if seen >= limit {
                return Some(limit);
            }
        }
        None
    }

    /// Takes one line: up to and including `\n`, or `limit` bytes, whichever
    /// comes first. With `at_eof`, an unterminated tail is a line too.
    /// Returns `None` when the buffered bytes cannot decide it yet.
    pub(crate) fn take_line(&mut self, limit: usize, at_eof: bool) -> Option<Bytes> {
        if limit == 0 {
            return Some(Bytes::new());
        }
        match self.line_len(limit) {
            Some(n) => Some(self.take(n)),
            None if at_eof => Some(self.take_all()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(parts: &[&str]) -> BodyBuffer {
        let mut b = BodyBuffer::default();
        for p in parts {
            b.push(Bytes::copy_from_slice(p.as_bytes()));
        }
        b
    }

    #[test]
    fn take_across_chunks() {
        let cases: &[(&[&str], usize, &str, usize)] = &[
            (&["abc", "def"], 2, "ab", 4),
            (&["abc", "def"], 3, "abc", 3),
            (&["abc", "def"], 4, "abcd", 2),
            (&["abc", "def"], 10, "abcdef", 0),
            (&["", "x"], 1, "x", 0),
            (&[], 5, "", 0),
            (&["a", "b", "c", "d"], 3, "abc", 1),
        ];
        for (parts, n, want, left) in cases {
            let mut b = buf(parts);
            assert_eq!(&b.take(*n)[..], want.as_bytes(), "{parts:?} take {n}");
            assert_eq!(b.len(), *left);
        }
    }

    #[test]
    fn lines_across_chunks() {
        let cases: &[(&[&str], usize, bool, Option<&str>)] = &[
            (&["ab\ncd"], usize::MAX, false, Some("ab\n")),
            (&["ab", "c\nd"], usize::MAX, false, Some("abc\n")),
            (&["ab", "cd"], usize::MAX, false, None),
            (&["ab", "cd"], usize::MAX, true, Some("abcd")),
            (&["abcdef\n"], 3, false, Some("abc")),
            (&["ab", "cdef\n"], 3, false, Some("abc")),
            (&["ab"], 3, false, None),
            (&["ab"], 0, false, Some("")),
            (&["\n"], 5, false, Some("\n")),
            (&[], 5, true, Some("")),
        ];
        for (parts, limit, eof, want) in cases {
            let mut b = buf(parts);
            let got = b.take_line(*limit, *eof);
            assert_eq!(
                got.as_deref(),
                want.map(str::as_bytes),
                "{parts:?} {limit} {eof}"
            );
        }
    }

    #[test]
    fn take_all_and_len() {
        let mut b = buf(&["12", "345", "6"]);
        assert_eq!(b.len(), 6);
        assert_eq!(&b.take(1)[..], b"1");
        assert_eq!(&b.take_all()[..], b"23456");
        assert!(b.is_empty());
    }
}
