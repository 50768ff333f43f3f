//! The request-body buffer behind `wsgi.input`: pure byte logic, no I/O, no Python.
//!
//! The network side appends the chunks hyper delivers; the reading side asks
//! how much `read(n)`, `readline(limit)` and friends get now, then drains
//! exactly that, across chunk boundaries, as slices of the chunks: the
//! caller copies each byte of a large chunk once, into the `bytes` object
//! the app gets (`input.rs`), never into an intermediate buffer. Deciding
//! *when* to fetch more bytes from the socket is left to `input.rs`; this
//! module only answers "is what is buffered enough?".
//!
//! Small chunks are the exception: each is a slice of a hyper read buffer
//! of at least 8 KiB, and keeps all of it alive while it waits here. A
//! client sending one byte per packet into a `read(65536)` would so make
//! the worker keep an 8 KiB buffer per byte, 512 MiB for that one read. Chunks under
//! `COPY_BELOW` are therefore copied into one owned tail and let go at
//! once: what a pending read holds is what it has received, plus at most
//! one read buffer per large chunk.
//!
//! A line that trickles in is searched once: the buffer remembers how many
//! bytes at its front hold no `\n`, so `readline()` over many small frames
//! costs linear time, not quadratic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::cell::Cell;
use std::collections::VecDeque;

/// Chunks shorter than this are copied out of hyper's read buffer: it is
/// hyper's smallest read buffer, so a chunk kept as is is at least as long
/// as the buffer it keeps, except while hyper shrinks a buffer it grew for
/// a fast client (a few reads).
const COPY_BELOW: usize = 8 * 1024;

/// Bytes received from the client and not yet handed to the app.
#[derive(Debug, Default)]
pub(crate) struct BodyBuffer {
    /// Received chunks in order; the front one may be partly consumed.
    chunks: VecDeque<Bytes>,
    /// Small chunks received after all of `chunks`, copied and joined.
    tail: BytesMut,
    /// Total bytes in `chunks` and `tail`, so `len()` is O(1).
    len: usize,
    /// Bytes at the front known to hold no `\n`: a line that trickles in
    /// is searched from here, not from its start on every chunk.
    no_newline: Cell<usize>,
    /// Bytes `line_len` has looked at, all told (tests check it is linear).
    #[cfg(test)]
    scanned: Cell<usize>,
}

impl BodyBuffer {
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        if chunk.len() < COPY_BELOW {
            self.tail.put_slice(&chunk);
            return;
        }
        if !self.tail.is_empty() {
            // The whole tail, spare room too: a split would leave the next
            // small chunks in the old allocation, keeping it alive.
            self.chunks
                .push_back(std::mem::take(&mut self.tail).freeze());
        }
        self.chunks.push_back(chunk);
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
        self.no_newline
            .set(self.no_newline.get().saturating_sub(left));
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
        if left > 0 {
            out(&self.tail[..left]);
            self.tail.advance(left);
        }
        if self.tail.is_empty() && self.tail.capacity() > COPY_BELOW {
            // A trickled read's worth: not kept while the app works.
            self.tail = BytesMut::new();
        }
    }

    /// Length of the first line (including its `\n`) if one is complete
    /// within the first `limit` bytes; `None` if more bytes are needed.
    pub(crate) fn line_len(&self, limit: usize) -> Option<usize> {
        let known = self.no_newline.get();
        if known >= limit {
            return Some(limit);
        }
        let mut seen = 0;
        for chunk in self.chunks.iter().map(|c| &c[..]).chain([&self.tail[..]]) {
            let end = chunk.len().min(limit - seen);
            // `known < limit`, so `start <= end`.
            let start = known.saturating_sub(seen).min(end);
            #[cfg(test)]
            self.scanned.set(self.scanned.get() + (end - start));
            if let Some(pos) = chunk[start..end].iter().position(|&b| b == b'\n') {
                self.no_newline.set(seen + start + pos);
                return Some(seen + start + pos + 1);
            }
            seen += end;
            if seen >= limit {
                return Some(limit);
            }
        }
        self.no_newline.set(seen);
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

    /// A chunk of `units` × `COPY_BELOW` bytes of `c`: kept as is, never copied.
    fn big(c: u8, units: usize) -> Bytes {
        Bytes::from(vec![c; units * COPY_BELOW])
    }

    #[test]
    fn drain_hands_one_piece_per_large_chunk() {
        let u = COPY_BELOW;
        let cases: &[(&[usize], usize, &[usize], usize)] = &[
            (&[3, 3, 2], 7 * u, &[3 * u, 3 * u, u], u),
            (&[3, 3], 3 * u, &[3 * u], 3 * u),
            (&[3, 3], 2 * u, &[2 * u], 4 * u),
            (&[3], 9 * u, &[3 * u], 0),
            (&[3], 0, &[], 3 * u),
        ];
        for (units, n, pieces, left) in cases {
            let mut b = BodyBuffer::default();
            for (i, k) in units.iter().enumerate() {
                b.push(big(b'a' + i as u8, *k));
            }
            let mut got: Vec<usize> = Vec::new();
            b.drain(*n, |p| got.push(p.len()));
            assert_eq!(got, *pieces, "{units:?} drain {n}");
            assert_eq!(b.len(), *left);
            let rest = take(&mut b, usize::MAX);
            assert_eq!(rest.len(), *left);
        }
    }

    #[test]
    fn small_chunks_are_joined_in_order_and_let_go() {
        let mut b = BodyBuffer::default();
        let mut want = Vec::new();
        let mut kept = Vec::new();
        for (i, chunk) in [
            Bytes::from_static(b"ab"),
            Bytes::copy_from_slice(b"c"),
            big(b'x', 1),
            Bytes::copy_from_slice(b"de\n"),
            Bytes::copy_from_slice(b"f"),
            big(b'y', 2),
            Bytes::copy_from_slice(b"g"),
        ]
        .into_iter()
        .enumerate()
        {
            want.extend_from_slice(&chunk);
            b.push(chunk.clone());
            kept.push((i, chunk));
        }
        assert_eq!(b.len(), want.len());
        for (i, chunk) in &kept[1..] {
            let small = chunk.len() < COPY_BELOW;
            assert_eq!(chunk.is_unique(), small, "chunk {i}: held iff large");
        }
        let mut pieces = Vec::new();
        let mut got = Vec::new();
        b.drain(usize::MAX, |p| {
            pieces.push(p.len());
            got.extend_from_slice(p);
        });
        assert_eq!(got, want);
        // "abc", the large x, "de\nf", the large y, "g".
        assert_eq!(pieces, [3, COPY_BELOW, 4, 2 * COPY_BELOW, 1]);
        assert!(b.tail.capacity() <= COPY_BELOW);
    }

    #[test]
    fn a_trickled_read_holds_what_it_received() {
        // One byte per packet, each a slice of its own 8 KiB read buffer.
        let mut b = BodyBuffer::default();
        let mut held = Vec::new();
        for i in 0..20_000u32 {
            let mut backing = BytesMut::with_capacity(COPY_BELOW);
            backing.put_u8(i as u8);
            let chunk = backing.split().freeze();
            b.push(chunk.clone());
            held.push(chunk);
        }
        assert!(held.iter().all(Bytes::is_unique), "a read buffer is pinned");
        assert_eq!(b.len(), 20_000);
        assert!(b.tail.capacity() < 64 * 1024);
        assert_eq!(b.line_len(usize::MAX), Some(11), "byte 10 is a newline");
        let got = take(&mut b, 300);
        assert_eq!(got, (0..300u32).map(|i| i as u8).collect::<Vec<_>>());
    }

    #[test]
    fn take_all_and_len() {
        let mut b = buf(&["12", "345", "6"]);
        assert_eq!(b.len(), 6);
        assert_eq!(take(&mut b, 1), b"1");
        assert_eq!(take(&mut b, usize::MAX), b"23456");
        assert!(b.is_empty());
    }

    #[test]
    fn a_trickled_line_is_searched_once() {
        let mut b = BodyBuffer::default();
        for _ in 0..1000 {
            b.push(Bytes::from_static(b"x"));
            assert_eq!(b.line_len(usize::MAX), None);
            assert_eq!(
                b.no_newline.get(),
                b.len(),
                "the next search starts past it"
            );
        }
        assert_eq!(b.scanned.get(), 1000, "each byte looked at once");
        b.push(Bytes::from_static(b"\nab"));
        assert_eq!(b.line_len(usize::MAX), Some(1001));
        assert_eq!(
            take_line(&mut b, usize::MAX, false).map(|l| l.len()),
            Some(1001)
        );
        assert_eq!(b.no_newline.get(), 0);
        assert_eq!(b.line_len(usize::MAX), None);
        assert_eq!(b.line_len(2), Some(2), "a limit within the known bytes");
    }

    /// What the buffer does to a body, step by step.
    #[derive(Debug, Clone)]
    enum Step {
        /// A chunk of `len` bytes (`\n` where `newline_every` divides the offset).
        Push { len: usize, newline_every: usize },
        /// `line_len(limit)`, checked against the bytes themselves.
        Line { limit: usize },
        /// `drain(n)`.
        Take { n: usize },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (prop_oneof![1usize..40, 8000usize..9000], 1usize..50)
                .prop_map(|(len, newline_every)| Step::Push { len, newline_every }),
            prop_oneof![1usize..60, Just(usize::MAX)].prop_map(|limit| Step::Line { limit }),
            (0usize..80).prop_map(|n| Step::Take { n }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn lines_match_the_bytes(steps in proptest::collection::vec(step(), 1..60)) {
            let mut b = BodyBuffer::default();
            let mut model: Vec<u8> = Vec::new();
            for s in steps {
                match s {
                    Step::Push { len, newline_every } => {
                        let chunk: Vec<u8> = (0..len)
                            .map(|i| if (model.len() + i).is_multiple_of(newline_every) { b'\n' } else { b'x' })
                            .collect();
                        model.extend_from_slice(&chunk);
                        b.push(Bytes::from(chunk));
                    }
                    Step::Line { limit } => {
                        let want = match model.iter().take(limit).position(|&c| c == b'\n') {
                            Some(pos) => Some(pos + 1),
                            None if model.len() >= limit => Some(limit),
                            None => None,
                        };
                        proptest::prop_assert_eq!(b.line_len(limit), want);
                    }
                    Step::Take { n } => {
                        let got = take(&mut b, n);
                        let want: Vec<u8> = model.drain(..n.min(model.len())).collect();
                        proptest::prop_assert_eq!(got, want);
                    }
                }
                proptest::prop_assert_eq!(b.len(), model.len());
            }
        }
    }
}
