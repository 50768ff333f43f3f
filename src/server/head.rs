//! Strict checks on a parsed request head: what hyper accepts but no app may see.
//!
//! hyper (through httparse) owns the syntax of a head and refuses on its own
//! obs-fold, whitespace before a colon, control characters and NUL, bare CR,
//! bad method tokens, versions other than HTTP/1.0 and 1.1, differing or
//! malformed `Content-Length`, any `Transfer-Encoding` on HTTP/1.0, and more
//! fields than `--limit-request-fields` (it is given that number). This
//! module owns the rest, on the head hyper hands the service and before the
//! app is called: the request-line and field-size limits, `Host` (RFC 9112
//! §3.2), methods with a lower-case letter (RFC 9110 §9.1), a `#` or a
//! length outside 3 to 20 (gunicorn's rule), and framing that hyper would
//! act on but that a proxy in front may read differently (RFC 9112 §6). It
//! does no I/O and keeps no state.
//!
//! What it cannot see, because hyper has already resolved it: a
//! `Content-Length` next to `Transfer-Encoding` (hyper drops the length,
//! frames by chunked and closes the connection after the response, as RFC
//! 9112 §6.1 allows), and a repeated identical `Content-Length` (hyper keeps
//! one, as RFC 9110 §8.6 allows, so such a request is served). The checks
//! for both stay here, so the rule would hold if the parser below passed
//! them on.

use crate::error::RequestError;
use crate::limits::HeadLimits;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Uri, Version};

/// A method as gunicorn takes one: 3 to 20 characters, no lower-case letter
/// (methods are case-sensitive, and a proxy that folds case would read
/// another request) and no `#`.
fn method_is_conventional(method: &str) -> bool {
    (3..=20).contains(&method.len()) && !method.bytes().any(|b| b.is_ascii_lowercase() || b == b'#')
}

/// Refuses a head that breaks a limit or could be read two ways; the error
/// names the refusal, and `RequestError::status` gives its status.
pub(crate) fn check_head(
    head: &http::request::Parts,
    limits: &HeadLimits,
) -> Result<(), RequestError> {
    if let Some(max) = limits.request_line {
        if request_line_len(head) > max {
            return Err(RequestError::RequestLineTooLong);
        }
    }
    check_field_limits(&head.headers, limits)?;
    if head.method == http::Method::CONNECT {
        return Err(RequestError::Connect);
    }
    if !method_is_conventional(head.method.as_str()) {
        return Err(RequestError::BadMethod);
    }
    // A bare authority as the target is CONNECT's form alone (RFC 9112 §3.2.3).
    if head.uri.scheme().is_none() && head.uri.authority().is_some() {
        return Err(RequestError::MalformedHead);
    }
    // The asterisk form is OPTIONS' alone (RFC 9112 §3.2.4).
    if head.uri.path() == "*" && head.method != http::Method::OPTIONS {
        return Err(RequestError::MalformedHead);
    }
    check_host(head.version, &head.headers)?;
    // An absolute-form target's authority stands for `Host` (RFC 9112
    // §3.2.2; `HTTP_HOST` in the environ), so it is held to the same rule.
    if head.uri.scheme().is_some() && crate::wsgi::environ::target_host(&head.uri).is_none() {
        return Err(RequestError::BadHost);
    }
    // One pass over the names, instead of a hashed lookup for each field
    // below: most heads have none of them.
    let (mut framed, mut typed, mut expects) = (false, false, false);
    for name in head.headers.keys() {
        framed |= name == TRANSFER_ENCODING || name == CONTENT_LENGTH;
        typed |= name == CONTENT_TYPE;
        expects |= name == EXPECT;
    }
    if expects
        && head
            .headers
            .get_all(EXPECT)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        return Err(RequestError::ExpectationFailed);
    }
    if framed {
        check_framing(head.version, &head.headers)?;
    }
    if typed && head.headers.get_all(CONTENT_TYPE).iter().nth(1).is_some() {
        return Err(RequestError::DuplicateField);
    }
    Ok(())
}

/// The request line's length as gunicorn counts it: method, SP, target,
/// SP, version, without the CRLF. The target is measured from hyper's
/// `Uri`, which holds the bytes as sent, except a `#fragment` (dropped by
/// the parser; `Framing` marks a request line with one, which is refused)
/// and the `/` implied after an absolute-form authority: `Uri` shows
/// `http://a.example` as `http://a.example/`, so that line counts one byte
/// more than sent, and only a line of exactly the limit is refused for it.
pub(crate) fn request_line_len(head: &http::request::Parts) -> usize {
    let version = 8; // "HTTP/1.1" or "HTTP/1.0": hyper makes no other
    head.method.as_str().len() + 1 + target_len(&head.uri) + 1 + version
}

fn target_len(uri: &Uri) -> usize {
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => {
            scheme.len() + 3 + authority.as_str().len() + path.max(1)
        }
        (None, Some(authority)) => authority.as_str().len() + path,
        _ => path,
    }
}

/// A field's size as `--limit-request-field-size` counts it.
pub(crate) fn field_size(name: &str, value: &HeaderValue) -> usize {
    name.len() + 2 + value.len()
}

fn check_field_limits(headers: &HeaderMap, limits: &HeadLimits) -> Result<(), RequestError> {
    if headers.len() > limits.fields {
        return Err(RequestError::TooManyFields);
    }
    if let Some(max) = limits.field_size {
        if headers
            .iter()
            .any(|(name, value)| field_size(name.as_str(), value) > max)
        {
            return Err(RequestError::FieldTooLarge);
        }
    }
    Ok(())
}

/// RFC 9112 §3.2: exactly one `Host` on HTTP/1.1, at most one on 1.0, and
/// a value that is a host with an optional port.
fn check_host(version: Version, headers: &HeaderMap) -> Result<(), RequestError> {
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(RequestError::BadHost),
        (None, None) if version >= Version::HTTP_11 => Err(RequestError::BadHost),
        (None, None) => Ok(()),
        (Some(host), None) if valid_host(host.as_bytes()) => Ok(()),
        (Some(_), None) => Err(RequestError::BadHost),
    }
}

/// The bytes a registered name may hold (RFC 3986 `unreserved`,
/// `pct-encoded`'s `%` and `sub-delims`), as a table: a `Host` is checked
/// on every request.
const HOST_NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// `uri-host [ ":" port ]` of RFC 3986 (empty is allowed: RFC 9112 §3.2).
/// Userinfo, paths, spaces and anything else that could make the name the
/// app builds URLs from mean something else are refused.
pub(crate) fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.first() {
        Some(b'[') => match host.iter().position(|&b| b == b']') {
            Some(end) if ip_literal(&host[1..end]) => (&host[..0], &host[end + 1..]),
            _ => return false,
        },
        _ => match host.iter().position(|&b| b == b':') {
            // A port with no name (RFC 9110 §4.2.1: no empty host in a URI).
            Some(0) => return false,
            Some(colon) => (&host[..colon], &host[colon..]),
            None => (host, &host[..0]),
        },
    };
    let mut escaped = false;
    let name_ok = name.iter().all(|&b| {
        escaped |= b == b'%';
        HOST_NAME_BYTE[usize::from(b)]
    }) && (!escaped || escapes_whole(name));
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => {
            digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && digits
                    .iter()
                    .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'))
                    <= 65535
        }
        Some(_) => false,
    };
    name_ok && port_ok
}

/// What RFC 3986 allows between `[` and `]`: an IPv6 address (`IPv6address`,
/// which `Ipv6Addr` parses: no zone, an IPv4 tail allowed), or
/// `IPvFuture` (`v` 1*HEXDIG `.` 1*( unreserved / sub-delims / `:` )).
fn ip_literal(inside: &[u8]) -> bool {
    match inside.split_first() {
        Some((b'v' | b'V', rest)) => {
            let Some(dot) = rest.iter().position(|&b| b == b'.') else {
                return false;
            };
            let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
            !version.is_empty()
                && version.iter().all(u8::is_ascii_hexdigit)
                && !tail.is_empty()
                && tail
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b))
        }
        _ => std::str::from_utf8(inside).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok()),
    }
}

/// Every `%` in a reg-name starts `pct-encoded`: `%` HEXDIG HEXDIG.
fn escapes_whole(name: &[u8]) -> bool {
    let mut rest = name;
    while let Some(at) = memchr::memchr(b'%', rest) {
        match rest.get(at + 1..at + 3) {
            Some(&[a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
                rest = &rest[at + 3..]
            }
            _ => return false,
        }
    }
    true
}

/// RFC 9112 §6: one way to find the end of the body, and only one.
fn check_framing(version: Version, headers: &HeaderMap) -> Result<(), RequestError> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    let (te_first, te_more) = (te.next(), te.next().is_some());
    let (cl_first, cl_more) = (cl.next(), cl.next().is_some());
    if te_first.is_some() && cl_first.is_some() {
        return Err(RequestError::LengthAndChunked);
    }
    if let Some(value) = te_first {
        let chunked = value
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if version < Version::HTTP_11 || te_more || !chunked {
            return Err(RequestError::BadTransferEncoding);
        }
    }
    if let Some(value) = cl_first {
        if cl_more || parse_content_length(value.as_bytes()).is_none() {
            return Err(RequestError::BadContentLength);
        }
    }
    Ok(())
}

/// `1*DIGIT` that fits a `u64`; nothing else (no sign, list or space).
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestError as E;

    const LIMITS: HeadLimits = HeadLimits {
        request_line: Some(40),
        fields: 5,
        field_size: Some(40),
    };

    fn head(line: &str, fields: &[(&str, &str)]) -> http::request::Parts {
        let mut parts = line.splitn(3, ' ');
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) => (m, t, v),
            _ => panic!("bad test line {line:?}"),
        };
        let version = match version {
            "HTTP/1.0" => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut b = http::Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for (k, v) in fields {
            b = b.header(
                *k,
                HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| panic!("{v:?}")),
            );
        }
        match b.body(()) {
            Ok(req) => req.into_parts().0,
            Err(e) => panic!("bad test request {line:?}: {e}"),
        }
    }

    #[test]
    fn table() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<RequestError>);
        let long_target = format!("/{}", "a".repeat(40 - "GET / HTTP/1.1".len()));
        let at_limit = format!("GET {long_target} HTTP/1.1");
        let over_limit = format!("GET {long_target}b HTTP/1.1");
        let over = "v".repeat(40 - "x-a: ".len() + 1);
        let over_more = "v".repeat(40 - "x-a: ".len() + 2);
        let h = ("host", "example.com");
        let cases: &[Case<'_>] = &[
            ("GET / HTTP/1.1", &[h], None),
            ("GET / HTTP/1.0", &[], None),
            ("GET / HTTP/1.0", &[h], None),
            ("GET / HTTP/1.1", &[], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[h, h], Some(E::BadHost)),
            ("GET / HTTP/1.0", &[h, ("host", "b")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "")], None),
            ("GET / HTTP/1.1", &[("host", "a.example:8080")], None),
            ("GET / HTTP/1.1", &[("host", "[::1]:80")], None),
            ("GET / HTTP/1.1", &[("host", "127.0.0.1")], None),
            ("GET / HTTP/1.1", &[h, ("expect", "100-continue")], None),
            ("GET / HTTP/1.1", &[h, ("expect", "100-Continue")], None),
            ("GET / HTTP/1.0", &[("expect", "100-continue")], None),
            (
                "GET / HTTP/1.1",
                &[h, ("expect", "foo")],
                Some(E::ExpectationFailed),
            ),
            (
                "GET / HTTP/1.1",
                &[h, ("expect", "100-continue"), ("expect", "x")],
                Some(E::ExpectationFailed),
            ),
            ("GET / HTTP/1.1", &[("host", "a b")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "user@a")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "a/b")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "a:80:80")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "a:8x")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "a:65535")], None),
            ("GET / HTTP/1.1", &[("host", "a:")], None),
            ("GET / HTTP/1.1", &[("host", "a:65536")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", ":80")], Some(E::BadHost)),
            ("GET a.example:80 HTTP/1.1", &[h], Some(E::MalformedHead)),
            ("GET //a/x HTTP/1.1", &[h], None),
            ("OPTIONS * HTTP/1.1", &[h], None),
            ("GET * HTTP/1.1", &[h], Some(E::MalformedHead)),
            ("POST * HTTP/1.1", &[h], Some(E::MalformedHead)),
            ("GET / HTTP/1.1", &[("host", "[::1")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "[a b]")], Some(E::BadHost)),
            // QA (session 41): what is inside the brackets, and an escape,
            // are checked whole.
            ("GET / HTTP/1.1", &[("host", "[1.2.3.4]")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "[:::::]")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "[v1.]")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "%")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "a%zz")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "a%4")], Some(E::BadHost)),
            ("GET / HTTP/1.1", &[("host", "[v1.x]:80")], None),
            ("GET / HTTP/1.1", &[("host", "[::ffff:1.2.3.4]")], None),
            ("GET / HTTP/1.1", &[("host", "[2001:db8::1]:8080")], None),
            ("GET / HTTP/1.1", &[("host", "a%2Eexample")], None),
            ("GET http://a/ HTTP/1.1", &[h], None),
            ("GET http://u:p@a/ HTTP/1.1", &[h], Some(E::BadHost)),
            ("GET http://a:99999999/ HTTP/1.1", &[h], Some(E::BadHost)),
            (at_limit.as_str(), &[h], None),
            (over_limit.as_str(), &[h], Some(E::RequestLineTooLong)),
            ("GET / HTTP/1.1", &[h, ("x-a", &over[1..])], None),
            (
                "GET / HTTP/1.1",
                &[h, ("x-a", &over)],
                Some(E::FieldTooLarge),
            ),
            (
                "GET / HTTP/1.1",
                &[h, ("x-a", &over_more)],
                Some(E::FieldTooLarge),
            ),
            (
                "GET / HTTP/1.1",
                &[h, ("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")],
                None,
            ),
            (
                "GET / HTTP/1.1",
                &[
                    h,
                    ("a", "1"),
                    ("b", "1"),
                    ("c", "1"),
                    ("d", "1"),
                    ("e", "1"),
                ],
                Some(E::TooManyFields),
            ),
            ("POST / HTTP/1.1", &[h, ("content-length", "5")], None),
            ("POST / HTTP/1.1", &[h, ("content-length", "0005")], None),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "+5")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "-5")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "5, 5")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", " 5")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "99999999999999999999")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "5"), ("content-length", "5")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "5"), ("content-length", "6")],
                Some(E::BadContentLength),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("transfer-encoding", "chunked")],
                None,
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("transfer-encoding", "Chunked")],
                None,
            ),
            (
                "POST / HTTP/1.0",
                &[h, ("transfer-encoding", "chunked")],
                Some(E::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("transfer-encoding", "chunked, chunked")],
                Some(E::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("transfer-encoding", "gzip, chunked")],
                Some(E::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.1",
                &[
                    h,
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked"),
                ],
                Some(E::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("transfer-encoding", "identity")],
                Some(E::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("transfer-encoding", "xchunked")],
                Some(E::BadTransferEncoding),
            ),
            (
                "POST / HTTP/1.1",
                &[h, ("content-length", "5"), ("transfer-encoding", "chunked")],
                Some(E::LengthAndChunked),
            ),
            ("POST / HTTP/1.1", &[h, ("content-type", "a")], None),
            (
                "POST / HTTP/1.1",
                &[h, ("content-type", "a"), ("content-type", "b")],
                Some(E::DuplicateField),
            ),
        ];
        for (line, fields, want) in cases {
            let got = check_head(&head(line, fields), &LIMITS).err();
            assert_eq!(got, *want, "{line} {fields:?}");
        }
    }

    #[test]
    fn no_limit_options() {
        let none = HeadLimits::from_options(0, 0, 0);
        assert_eq!(none.request_line, None);
        assert_eq!(none.field_size, None);
        assert_eq!(none.fields, HeadLimits::MAX_FIELDS);
        assert_eq!(
            HeadLimits::from_options(1, 1 << 20, 1).fields,
            HeadLimits::MAX_FIELDS
        );
        let long = format!("GET /{} HTTP/1.1", "a".repeat(60_000));
        let big = "v".repeat(60_000);
        let head = head(&long, &[("host", "x"), ("x-big", &big)]);
        assert_eq!(check_head(&head, &none), Ok(()));
    }

    #[test]
    fn request_line_length_counts_the_target_as_sent() {
        for (line, len) in [
            ("GET / HTTP/1.1", 14),
            ("GET /a?b=c HTTP/1.0", 19),
            ("OPTIONS * HTTP/1.1", 18),
            ("CONNECT a.example:443 HTTP/1.1", 30),
            ("GET http://a.example/x HTTP/1.1", 31),
            ("GET http://a.example HTTP/1.1", 30),
        ] {
            assert_eq!(request_line_len(&head(line, &[])), len, "{line}");
        }
    }
}
