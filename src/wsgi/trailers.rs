//! Which trailer fields of a chunked request body Siesta refuses.
//!
//! hyper 1.12 parses chunked trailers and hands them over as the body's
//! last frame, whatever they name (its decoder has a TODO to refuse
//! `Transfer-Encoding`, `Content-Length` and the like). WSGI has no way to
//! show an app its trailers, so they are dropped; but a trailer that would
//! change framing, routing or how the content is read (RFC 9110 §6.5.1)
//! is a sign that something between the client and Siesta may see another
//! request than Siesta does, and the body is then treated as malformed
//! (400, connection closed), as a bad chunk size is. `input.rs` applies it.

use http::HeaderMap;

/// Fields that must not come in a trailer (RFC 9110 §6.5.1 and §6.6.2),
/// lowercase. `server/framing.rs` refuses them on the byte stream, before
/// hyper parses them, so this is the second look, on hyper's parse.
pub(crate) const FORBIDDEN: &[&[u8]] = &[
    b"transfer-encoding",
    b"content-length",
    b"host",
    b"trailer",
    b"te",
    b"connection",
    b"content-encoding",
    b"content-type",
    b"content-range",
    b"expect",
    b"authorization",
];

/// Whether a trailer section may be dropped quietly.
pub(crate) fn allowed(trailers: &HeaderMap) -> bool {
    trailers
        .keys()
        .all(|k| !FORBIDDEN.contains(&k.as_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (name, ok) in [
            ("x-checksum", true),
            ("server-timing", true),
            ("content-length", false),
            ("transfer-encoding", false),
            ("host", false),
            ("trailer", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static("1"),
            );
            assert_eq!(allowed(&h), ok, "{name}");
        }
        assert!(allowed(&HeaderMap::new()));
    }
}
