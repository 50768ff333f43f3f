//! Property tests of `head::check_head` (and `net::bind::BindSpec::parse`).
//!
//! Arbitrary request lines and header sets, mixing the fields that matter
//! (`Host`, `Content-Length`, `Transfer-Encoding`, `Content-Type`) with
//! random ones and both well-formed and hostile values, under arbitrary
//! limits. Properties: nothing panics, and every head that is accepted has
//! exactly one valid `Host` on HTTP/1.1 (at most one on 1.0), at most one
//! `Content-Length` of plain digits, no `Transfer-Encoding` unless it is a
//! single `chunked` on 1.1 without `Content-Length`, at most one
//! `Content-Type`, and is within every limit. `cargo test` runs a bounded
//! number of cases; for a million:
//! `PROPTEST_CASES=1000000 cargo test --release head_props`.

use super::head::{check_head, field_size, request_line_len, valid_host};
use crate::limits::HeadLimits;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Uri, Version};
use proptest::prelude::*;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::HEAD),
        "[A-Z!#$%&'*+.^_`|~-]{1,12}"
            .prop_filter_map("token", |m| Method::from_bytes(m.as_bytes()).ok()),
    ]
}

fn target() -> impl Strategy<Value = Uri> {
    prop_oneof![
        Just("/".to_string()),
        Just("*".to_string()),
        "/[a-zA-Z0-9/._~%!$&'()*+,;=:@?-]{0,120}",
        "http://[a-z]{1,12}(:[0-9]{1,5})?(/[a-z0-9?=&]{0,40})?",
        "[a-z]{1,12}\\.example:[0-9]{1,5}",
    ]
    .prop_filter_map("uri", |t| Uri::try_from(t).ok())
}

fn name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        3 => Just(HOST),
        3 => Just(CONTENT_LENGTH),
        3 => Just(TRANSFER_ENCODING),
        2 => Just(CONTENT_TYPE),
        2 => "[a-z0-9!#$%&'*+.^_`|~-]{1,20}".prop_filter_map("name", |n| HeaderName::from_bytes(n.as_bytes()).ok()),
    ]
}

fn value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        prop::sample::select(vec![
            "chunked",
            "Chunked",
            " chunked ",
            "chunked, chunked",
            "gzip, chunked",
            "chunked, gzip",
            ",chunked",
            "identity",
            "0",
            "5",
            "0005",
            "-1",
            "+5",
            "5, 5",
            "5 5",
            "",
            "99999999999999999999",
            "a.example",
            "a.example:8080",
            "[::1]:80",
            "[::1",
            "a b",
            "user@host",
            "host/path",
            "a:80:80",
            "text/plain",
        ])
        .prop_map(HeaderValue::from_static),
        prop::collection::vec(
            prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
            0..120
        )
        .prop_filter_map("value", |v| HeaderValue::from_bytes(&v).ok()),
    ]
}

fn limits() -> impl Strategy<Value = HeadLimits> {
    (0usize..400, 0usize..60, 0usize..300)
        .prop_map(|(line, fields, size)| HeadLimits::from_options(line, fields, size))
}

type Head = (Method, Uri, Version, Vec<(HeaderName, HeaderValue)>);

fn head() -> impl Strategy<Value = Head> {
    (
        method(),
        target(),
        prop_oneof![Just(Version::HTTP_10), Just(Version::HTTP_11)],
        prop::collection::vec((name(), value()), 0..12),
    )
}

fn parts((method, uri, version, fields): Head) -> http::request::Parts {
    let mut req = http::Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    for (k, v) in fields {
        req.headers_mut().append(k, v);
    }
    req.into_parts().0
}

proptest! {
    #[test]
    fn head_props_accepted_heads_are_unambiguous(h in head(), limits in limits()) {
        let head = parts(h);
        if check_head(&head, &limits).is_ok() {
            let hd = &head.headers;
            let hosts: Vec<_> = hd.get_all(HOST).iter().collect();
            if head.version == Version::HTTP_11 {
                prop_assert_eq!(hosts.len(), 1);
            }
            prop_assert!(hosts.len() <= 1);
            prop_assert!(hosts.iter().all(|h| valid_host(h.as_bytes())));
            prop_assert!(hosts.iter().all(|h| !h.as_bytes().iter().any(|b| matches!(b, b' ' | b'@' | b'/' | b'?' | b'#'))));
            let cls: Vec<_> = hd.get_all(CONTENT_LENGTH).iter().collect();
            prop_assert!(cls.len() <= 1);
            prop_assert!(cls.iter().all(|v| !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit)));
            let tes: Vec<_> = hd.get_all(TRANSFER_ENCODING).iter().collect();
            if !tes.is_empty() {
                prop_assert_eq!(tes.len(), 1);
                prop_assert_eq!(head.version, Version::HTTP_11);
                prop_assert!(cls.is_empty());
                prop_assert!(tes[0].to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked")));
            }
            prop_assert!(hd.get_all(CONTENT_TYPE).iter().count() <= 1);
            prop_assert!(hd.len() <= limits.fields);
            if let Some(max) = limits.request_line {
                prop_assert!(request_line_len(&head) <= max);
            }
            if let Some(max) = limits.field_size {
                prop_assert!(hd.iter().all(|(k, v)| field_size(k.as_str(), v) <= max));
            }
        }
    }

    #[test]
    fn head_props_host_check_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = valid_host(&bytes);
    }

    #[test]
    fn bind_props_parse_never_panics(
        s in prop_oneof![
            ".*",
            "(unix:|fd://|\\[)?[0-9a-fA-F:.\\]\\[]{0,40}(:[0-9+-]{0,8})?",
        ]
    ) {
        let _ = crate::net::bind::BindSpec::parse(&s);
    }
}
