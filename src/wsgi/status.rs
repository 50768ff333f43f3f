//! Checking what the app passes to `start_response`: the status line and headers.
//!
//! Pure functions over `&str`, unit-tested without Python: a status must be
//! three digits from 200 to 599 and an optional reason phrase; header names
//! must be HTTP tokens and values latin-1 without CR, LF or NUL; hop-by-hop
//! headers belong to the server (PEP 3333). Turning the checked values into
//! a response is `start_response.rs`'s job.

use crate::error::ResponseError;
use http::{HeaderName, HeaderValue, StatusCode};

/// A checked status: the code and the reason when it is not the standard one.
pub(crate) fn parse_status(line: &str) -> Result<(StatusCode, Option<Vec<u8>>), ResponseError> {
    let bad = || ResponseError::BadStatus(line.to_string());
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let reason = match &line[3..] {
        "" => "",
        rest => rest.strip_prefix(' ').ok_or_else(bad)?,
    };
    let code: u16 = line[..3].parse().map_err(|_| bad())?;
    if !(200..=599).contains(&code) {
        return Err(bad());
    }
    if reason
        .chars()
        .any(|c| c.is_control() && c != '\t' || c as u32 > 0xff)
    {
        return Err(bad());
    }
    let status = StatusCode::from_u16(code).map_err(|_| bad())?;
    let custom = match status.canonical_reason() {
        Some(std) if std == reason => None,
        // Filled in with the code's own phrase ("200" is "200 OK"); a code
        // with none is sent with an empty one ("420 "), not hyper's "<none>".
        Some(_) if reason.is_empty() => None,
        // A native string: each character one latin-1 byte (PEP 3333), as
        // the headers are sent.
        _ => Some(reason.chars().map(|c| c as u8).collect()),
    };
    Ok((status, custom))
}

/// Headers a WSGI app may not set (PEP 3333, "hop-by-hop").
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// Checks one header pair and converts it for hyper.
pub(crate) fn parse_header(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), ResponseError> {
    let hname = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ResponseError::BadHeader(name.to_string()))?;
    if HOP_BY_HOP.contains(&hname.as_str()) {
        return Err(ResponseError::HopByHop(name.to_string()));
    }
    let bad = || ResponseError::BadHeader(format!("{name}: {value}"));
    // Latin-1 code points are the bytes (PEP 3333); an ASCII value, the
    // usual one, is its own bytes already. `from_bytes` refuses CR, LF, NUL
    // and the other controls but tab.
    let hvalue = if value.is_ascii() {
        HeaderValue::from_bytes(value.as_bytes())
    } else {
        let mut raw = Vec::with_capacity(value.len());
        for c in value.chars() {
            let b = u32::from(c);
            if b > 0xff {
                return Err(bad());
            }
            raw.push(b as u8);
        }
        HeaderValue::from_bytes(&raw)
    }
    .map_err(|_| bad())?;
    Ok((hname, hvalue))
}

/// The app's declared `Content-Length`: digits only (RFC 9110 §8.6), with
/// spaces or tabs around them; `None` for anything else (`+3`, `1e3`, `3,3`).
fn content_length(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes().trim_ascii();
    crate::server::head::parse_content_length(digits)
}

/// The one length the app's `Content-Length` headers declare, if any,
/// taken a header at a time as `start_response` parses them (no lookup in
/// the map afterwards). Any that is not a number, or numbers that differ,
/// are an error: the client could not tell where the response ends.
#[derive(Debug, Default)]
pub(crate) struct DeclaredLength {
    length: Option<u64>,
    headers: usize,
    /// Every header so far was plain digits.
    plain: bool,
}

impl DeclaredLength {
    /// One more `Content-Length` header.
    pub(crate) fn add(&mut self, value: &HeaderValue) -> Result<(), ResponseError> {
        match content_length(value) {
            Some(n) if self.length.is_none_or(|d| d == n) => {
                self.plain = (self.headers == 0 || self.plain)
                    && value.as_bytes().iter().all(u8::is_ascii_digit);
                self.length = Some(n);
                self.headers += 1;
                Ok(())
            }
            _ => {
                let shown = String::from_utf8_lossy(value.as_bytes());
                Err(ResponseError::BadHeader(format!("Content-Length: {shown}")))
            }
        }
    }

    /// The length declared, if any header declared one.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// The length was declared once, in its plain form (`" 3"` and a
    /// repeated `3` are not): the header can go out as the app gave it.
    pub(crate) fn plain(&self) -> bool {
        self.headers == 1 && self.plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        type Case<'a> = (&'a str, Option<(u16, Option<&'a [u8]>)>);
        let cases: &[Case<'_>] = &[
            ("200 OK", Some((200, None))),
            ("404 Not Found", Some((404, None))),
            ("200 Fine", Some((200, Some(b"Fine")))),
            // Latin-1, as PEP 3333's native strings are sent.
            ("200 caf\u{e9}", Some((200, Some(b"caf\xe9")))),
            ("200 \u{20ac}", None),
            ("204", Some((204, None))),
            // No phrase of its own: an empty one, not hyper's "<none>".
            ("420", Some((420, Some(b"")))),
            ("499 ", Some((499, Some(b"")))),
            ("599 Custom", Some((599, Some(b"Custom")))),
            ("999 Nope", None),
            ("100 Continue", None),
            ("20 OK", None),
            ("abc OK", None),
            ("200OK", None),
            ("200 OK\r\nX: y", None),
            ("", None),
        ];
        for (line, want) in cases {
            let got = parse_status(line).ok();
            let got = got.as_ref().map(|(s, r)| (s.as_u16(), r.as_deref()));
            assert_eq!(got, *want, "{line:?}");
        }
    }

    #[test]
    fn declared_lengths() {
        let cases: &[(&[&str], Option<Option<u64>>)] = &[
            (&[], Some(None)),
            (&["3"], Some(Some(3))),
            (&[" 3\t"], Some(Some(3))),
            (&["3", "3"], Some(Some(3))),
            (&["0"], Some(Some(0))),
            (&["abc"], None),
            (&["+3"], None),
            (&["-3"], None),
            (&["1e3"], None),
            (&["3,3"], None),
            (&[""], None),
            (&["3", "4"], None),
            (&["99999999999999999999"], None),
        ];
        for (values, want) in cases {
            let mut declared = DeclaredLength::default();
            let got = values
                .iter()
                .try_for_each(|v| declared.add(&HeaderValue::from_static(v)))
                .map(|()| declared.length());
            assert_eq!(got.ok(), *want, "{values:?}");
            let plain = matches!(values, [v] if v.bytes().all(|b| b.is_ascii_digit()));
            if want.is_some() {
                assert_eq!(declared.plain(), plain, "{values:?}");
            }
        }
    }

    #[test]
    fn headers() {
        let cases: &[(&str, &str, bool)] = &[
            ("Content-Type", "text/plain", true),
            ("X-Latin", "caf\u{e9}", true),
            ("X-Bad", "a\r\nb", false),
            ("X-Bad", "a\nb", false),
            ("X-Bad", "a\rb", false),
            ("X-Bad", "a\0b", false),
            ("X-Bad", "a\u{7f}b", false),
            ("X-Tab", "a\tb", true),
            ("X-Bad", "caf\u{e9}\n", false),
            ("X-Wide", "\u{263a}", false),
            ("Bad Name", "x", false),
            ("Connection", "close", false),
            ("Transfer-Encoding", "chunked", false),
            ("Set-Cookie", "a=b; Path=/", true),
        ];
        for (name, value, ok) in cases {
            assert_eq!(parse_header(name, value).is_ok(), *ok, "{name}: {value}");
        }
    }
}
