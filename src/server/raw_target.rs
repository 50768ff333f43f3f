//! Request targets with raw bytes that are not UTF-8, made acceptable to hyper.
//!
//! A client may send raw bytes above ASCII in a request target (`GET
//! /caf\xe9`): RFC 9112 does not allow them, but old clients and crawlers
//! send them, and uWSGI and gunicorn up to 23 served them. hyper's URI type
//! takes raw bytes only when they form UTF-8, and answers 400 otherwise.
//! For such a target `ClockedIo` hands hyper the request line with every
//! byte above ASCII in its target percent-encoded (`/caf%E9`) instead:
//! `PATH_INFO` is percent-decoded, so each raw byte comes out as one
//! latin-1 code point, as PEP 3333 has it; `QUERY_STRING` and `RAW_URI` show
//! the escapes, which an app's query parser decodes to the same bytes.
//! `--limit-request-line` still counts the line as sent (`Clock::escaped`).
//! A target that is UTF-8 (or that hyper refuses for another reason) is
//! left as sent.

use std::fmt::Write;

/// The request line `line` (without its LF) with the bytes above ASCII of
/// its target percent-encoded, when that target is not UTF-8; `None` when
/// the line is to go to hyper as it is.
pub(crate) fn encoded(line: &[u8]) -> Option<Vec<u8>> {
    let first = line.iter().position(|&b| b == b' ')?;
    let last = line.iter().rposition(|&b| b == b' ')?;
    let target = line.get(first + 1..last)?;
    if std::str::from_utf8(target).is_ok() {
        return None;
    }
    let high = target.iter().filter(|b| !b.is_ascii()).count();
    let mut escaped = String::with_capacity(target.len() + 2 * high);
    for &b in target {
        if b.is_ascii() {
            escaped.push(char::from(b));
        } else {
            let _ = write!(escaped, "%{b:02X}");
        }
    }
    Some([&line[..=first], escaped.as_bytes(), &line[last..]].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_high_bytes_of_a_target_that_is_not_utf8() {
        assert_eq!(
            encoded(b"GET /caf\xe9?q=\xe9&r=\xc3\xa9 HTTP/1.1\r").as_deref(),
            Some(&b"GET /caf%E9?q=%E9&r=%C3%A9 HTTP/1.1\r"[..])
        );
        assert_eq!(
            encoded(b"POST /\xff\xfe HTTP/1.0").as_deref(),
            Some(&b"POST /%FF%FE HTTP/1.0"[..])
        );
    }

    #[test]
    fn leaves_utf8_and_lines_it_cannot_read() {
        assert_eq!(encoded(b"GET /caf\xc3\xa9 HTTP/1.1\r"), None);
        assert_eq!(encoded(b"GET /plain HTTP/1.1"), None);
        assert_eq!(encoded(b"GET\xe9"), None, "no target");
        assert_eq!(encoded(b"GET /\xe9"), None, "no version");
    }
}
