//! The request-body buffer behind `wsgi.input`: pure byte logic, no I/O, no Python.
//!
//! The network side appends the chunks hyper delivers; the reading side asks
//! how much `read(n)`, `readline(limit)` and friends get now, then drains
//! exactly that, across chunk boundaries, as slices of the chunks: the
//! caller copies each byte once, into the `bytes` object the app gets
//! (`input.rs`), never into an intermediate buffer. Deciding *when* to
//! fetch more bytes from the socket is left to `input.rs`; this module
//! only answers "is what is buffered enough?".

use bytes::{Buf, Bytes};
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

    /// How many bytes a read of up to `n` bytes gets now.
    pub(crate) fn available(&self, n: usize) -> usize {
        n.min(self.len)
    }

    /// Consumes `n` bytes from the front (at most `len()`), handing them to
    /// `out` piece by piece in order: one call per chunk they span, so the
    /// caller copies each byte once, straight to where it goes.
    pub(crate) fn drain(&mut self, n: usize, mut out: impl FnMut(&[u8])) {
        let mut left = n.min(self.len);
        self.len -= left;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                out(front);
                self.chunks.pop_front();
            } else {
                out(&front[..left]);
                front.advance(left);
                left = 0;
            }
        }
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

    /// How many bytes `readline(limit)` gets now: up to and including `\n`,
    /// or `limit` bytes, whichever comes first. With `at_eof`, an
    /// unterminated tail is a line too. `None` when the buffered bytes
    /// cannot decide it yet.
    pub(crate) fn line_available(&self, limit: usize, at_eof: bool) -> Option<usize> {
        if limit == 0 {
            return Some(0);
        }
        match self.line_len(limit) {
            Some(n) => Some(n),
            None if at_eof => Some(self.len),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `take(n)` as a reader sees it: the drained pieces, joined.
    fn take(b: &mut BodyBuffer, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let n = b.available(n);
        b.drain(n, |piece| got.extend_from_slice(piece));
        got
    }

    fn take_line(b: &mut BodyBuffer, limit: usize, at_eof: bool) -> Option<Vec<u8>> {
        let n = b.line_available(limit, at_eof)?;
        Some(take(b, n))
    }

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
            assert_eq!(take(&mut b, *n), want.as_bytes(), "{parts:?} take {n}");
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
            let got = take_line(&mut b, *limit, *eof);
            assert_eq!(
                got.as_deref(),
                want.map(str::as_bytes),
                "{parts:?} {limit} {eof}"
            );
        }
    }

    #[test]
    fn drain_hands_one_piece_per_chunk() {
        let cases: &[(&[&str], usize, &[&str], usize)] = &[
            (&["abc", "def", "gh"], 7, &["abc", "def", "g"], 1),
            (&["abc", "def"], 3, &["abc"], 3),
            (&["abc", "def"], 2, &["ab"], 4),
            (&["abc"], 9, &["abc"], 0),
            (&["abc"], 0, &[], 3),
        ];
        for (parts, n, pieces, left) in cases {
            let mut b = buf(parts);
            let mut got: Vec<String> = Vec::new();
            b.drain(*n, |p| got.push(String::from_utf8_lossy(p).into_owned()));
            assert_eq!(got, *pieces, "{parts:?} drain {n}");
            assert_eq!(b.len(), *left);
            let rest = take(&mut b, usize::MAX);
            assert_eq!(rest.len(), *left);
        }
    }

    #[test]
    fn take_all_and_len() {
        let mut b = buf(&["12", "345", "6"]);
        assert_eq!(b.len(), 6);
        assert_eq!(take(&mut b, 1), b"1");
        assert_eq!(take(&mut b, usize::MAX), b"23456");
        assert!(b.is_empty());
    }
}
