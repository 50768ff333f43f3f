//! Trusted proxies: who may say what the client's address and scheme were.
//!
//! This module owns the rules, as pure functions over addresses and header
//! maps: `AllowList` (`--forwarded-allow-ips`, `--proxy-allow-from`: IPs,
//! CIDR networks, `*`), and `scheme_of`, which turns a trusted proxy's
//! `--secure-scheme-headers` (gunicorn's `X-Forwarded-Proto: https` and
//! friends) and RFC 7239 `Forwarded: proto=` into `wsgi.url_scheme`.
//! `proxy_protocol.rs` parses the PROXY protocol preamble. It does no I/O
//! and knows no connection or environ: `server/proxy.rs` applies these rules
//! to each connection and request, `wsgi/environ.rs` reads the outcome.

pub(crate) mod proxy_protocol;

use crate::error::RequestError;
use http::{HeaderMap, HeaderName};
use std::net::IpAddr;

/// The proxy settings of a worker, typed once by `config.rs`.
#[derive(Debug, Clone)]
pub(crate) struct Proxies {
    /// `--forwarded-allow-ips`: peers whose scheme headers are believed.
    pub forwarded_allow: AllowList,
    /// `--secure-scheme-headers`.
    pub scheme_headers: SchemeHeaders,
    /// `--forwarder-headers` names `SCRIPT_NAME`: a trusted peer's header
    /// of that name mounts the request (`MountPoint`).
    pub mount_header: bool,
    /// `--proxy-protocol`: `None` when off; otherwise every connection
    /// must open with a preamble of an accepted version.
    pub protocol: Option<proxy_protocol::Version>,
    /// `--proxy-allow-from`: peers allowed to send that preamble.
    pub proxy_allow: AllowList,
}

/// Addresses and networks a setting trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowList {
    /// `*`: every peer.
    Any,
    /// These networks (a bare address is a /32 or /128).
    Nets(Vec<Net>),
}

/// One network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Option<Net> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|&n| n <= max)?
            }
            Some(_) => return None,
        };
        Some(Net { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl AllowList {
    /// Parses `127.0.0.1,::1,10.0.0.0/8` or `*` (gunicorn's syntax); an empty
    /// string trusts no address.
    pub(crate) fn parse(s: &str) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                return Ok(AllowList::Any);
            }
            nets.push(Net::parse(item).ok_or_else(|| {
                format!("{item:?} is not an IP address or network (e.g. 10.0.0.0/8)")
            })?);
        }
        Ok(AllowList::Nets(nets))
    }

    /// Whether a peer is trusted. An IPv4 peer seen on an IPv6 socket
    /// (`::ffff:10.0.0.1`) is matched as the IPv4 address it is.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match self {
            AllowList::Any => true,
            AllowList::Nets(nets) => {
                let ip = ip.to_canonical();
                nets.iter().any(|n| n.contains(ip))
            }
        }
    }
}

/// The scheme a trusted proxy reports (only `https` changes the environ,
/// whose constant is `http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// A trusted proxy's `SCRIPT_NAME` header: where it mounts the app for this
/// request (gunicorn honours it by default: its `forwarder_headers`), kept
/// in the head's extensions for the environ and the access log. The bytes
/// as sent, without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountPoint(pub Vec<u8>);

impl MountPoint {
    /// From the request's headers: the last `SCRIPT_NAME`, when it is empty
    /// (mounted at the root) or a path (starts with `/`); `None` otherwise.
    pub(crate) fn of(headers: &HeaderMap) -> Option<MountPoint> {
        const NAME: HeaderName = HeaderName::from_static("script_name");
        let value = headers.get_all(NAME).iter().next_back()?;
        // Decoded as the path it is compared with (`wsgi/environ.rs`).
        let mut bytes: Vec<u8> =
            percent_encoding::percent_decode(value.as_bytes().trim_ascii()).collect();
        while bytes.last() == Some(&b'/') {
            bytes.pop();
        }
        // A path, and one an app may put in a URL as it is: no query or
        // fragment, no `//` (a URL's `//evil.example` names another host:
        // an open redirect), no `\` (browsers read it as `/`), no control
        // byte and no `.` or `..` segment.
        let plain = bytes.is_empty()
            || (bytes.starts_with(b"/")
                && !bytes.starts_with(b"//")
                && !bytes
                    .iter()
                    .any(|&b| matches!(b, b'?' | b'#' | b'\\' | 0x7f) || b < b' ')
                && !bytes[1..]
                    .split(|&b| b == b'/')
                    .any(|seg| seg == b"." || seg == b".."));
        plain.then_some(MountPoint(bytes))
    }
}

/// `--secure-scheme-headers`: each header and the value that means HTTPS.
#[derive(Debug, Clone, Default)]
pub(crate) struct SchemeHeaders(Vec<(HeaderName, String)>);

impl SchemeHeaders {
    /// From the settings table's map (names in any case).
    pub(crate) fn new<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SchemeHeaders, String> {
        let mut out = Vec::new();
        for (name, value) in pairs {
            let header = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("{name:?} is not a header name"))?;
            out.push((header, value.trim().to_string()));
        }
        Ok(SchemeHeaders(out))
    }
}

/// The scheme a trusted proxy's headers give, `None` when they say nothing.
///
/// As in gunicorn, every line of every `--secure-scheme-headers` header
/// votes (`https` when its value is the configured one, compared without
/// regard to ASCII case; `http` otherwise), and votes that disagree are a
/// 400 (`ConflictingScheme`): the request is ambiguous. Only when none of
/// those headers is present does RFC 7239 `Forwarded` decide, from the
/// `proto=` of its last element (the one the nearest proxy added). It never
/// conflicts with the others: nginx passes a client's own `Forwarded` on
/// untouched, so a client behind its own forward proxy would otherwise be
/// refused. An empty `--secure-scheme-headers` turns `Forwarded` off too.
/// Call this only for a trusted peer.
pub(crate) fn scheme_of(
    headers: &HeaderMap,
    rules: &SchemeHeaders,
) -> Result<Option<Scheme>, RequestError> {
    // One pass over the names, instead of a hashed lookup for each rule
    // and `Forwarded`: most requests carry none of them.
    let named = |name: &HeaderName| {
        name == http::header::FORWARDED || rules.0.iter().any(|(rule, _)| rule == name)
    };
    if rules.0.is_empty() || !headers.keys().any(named) {
        return Ok(None);
    }
    let mut voted = None;
    for (name, secure) in &rules.0 {
        for value in headers.get_all(name) {
            let vote = if value.as_bytes().eq_ignore_ascii_case(secure.as_bytes()) {
                Scheme::Https
            } else {
                Scheme::Http
            };
            match voted {
                Some(v) if v != vote => return Err(RequestError::ConflictingScheme),
                _ => voted = Some(vote),
            }
        }
    }
    if voted.is_some() {
        return Ok(voted);
    }
    let Some(last) = headers.get_all(http::header::FORWARDED).iter().next_back() else {
        return Ok(None);
    };
    Ok(last.to_str().ok().and_then(forwarded_proto))
}

/// `proto=` of the last element of an RFC 7239 `Forwarded` value; `None`
/// when that element has none or the value does not parse.
pub(crate) fn forwarded_proto(value: &str) -> Option<Scheme> {
    let last = split_outside_quotes(value, b',').into_iter().next_back()?;
    let mut proto = None;
    for pair in split_outside_quotes(last, b';') {
        let (k, v) = pair.split_once('=')?;
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(is_tchar) {
            return None;
        }
        if k.eq_ignore_ascii_case("proto") {
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(q) => q.strip_suffix('"')?,
                None => v,
            };
            let valid = v.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            if !valid || proto.is_some() {
                return None;
            }
            proto = Some(if v.eq_ignore_ascii_case("https") {
                Scheme::Https
            } else {
                Scheme::Http
            });
        }
    }
    proto
}

/// Splits on `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.1,::1", "127.0.0.1", true),
            ("127.0.0.1,::1", "::1", true),
            ("127.0.0.1,::1", "127.0.0.2", false),
            ("127.0.0.1,::1", "::ffff:127.0.0.1", true),
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.0/24, 172.16.0.0/12", "172.31.255.255", true),
            ("192.168.1.0/24, 172.16.0.0/12", "172.32.0.1", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("[::1]", "::1", true),
            ("::/0", "2001:db8::1", true),
            ("*", "203.0.113.9", true),
            ("127.0.0.1,*", "203.0.113.9", true),
            ("", "127.0.0.1", false),
            (" , ", "127.0.0.1", false),
        ];
        for (list, ip, want) in cases {
            let Ok(allow) = AllowList::parse(list) else {
                panic!("{list:?} did not parse")
            };
            let Ok(ip) = ip.parse::<IpAddr>() else {
                panic!("bad test ip {ip}")
            };
            assert_eq!(allow.contains(ip), *want, "{list:?} {ip}");
        }
    }

    #[test]
    fn bad_allow_lists() {
        for list in [
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "1.2.3",
            "127.0.0.1/8/8",
            "01.2.3.4",
        ] {
            assert!(AllowList::parse(list).is_err(), "{list:?}");
        }
    }

    fn gunicorn_rules() -> SchemeHeaders {
        let Ok(rules) = SchemeHeaders::new([
            ("X-FORWARDED-PROTOCOL", "ssl"),
            ("X-FORWARDED-PROTO", "https"),
            ("X-FORWARDED-SSL", "on"),
        ]) else {
            panic!("default rules")
        };
        rules
    }

    #[test]
    fn schemes() {
        use Scheme::{Http, Https};
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Result<Option<Scheme>, RequestError>,
        );
        let conflict = Err(RequestError::ConflictingScheme);
        let cases: &[Case<'_>] = &[
            (&[], Ok(None)),
            (&[("host", "x")], Ok(None)),
            (&[("x-forwarded-proto", "https")], Ok(Some(Https))),
            (&[("x-forwarded-proto", "HTTPS")], Ok(Some(Https))),
            (&[("x-forwarded-proto", "http")], Ok(Some(Http))),
            (&[("x-forwarded-proto", "https, http")], Ok(Some(Http))),
            (&[("x-forwarded-ssl", "on")], Ok(Some(Https))),
            (&[("x-forwarded-protocol", "ssl")], Ok(Some(Https))),
            (
                &[("x-forwarded-proto", "https"), ("x-forwarded-ssl", "on")],
                Ok(Some(Https)),
            ),
            (
                &[
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-proto", "https"),
                ],
                Ok(Some(Https)),
            ),
            (
                &[("x-forwarded-proto", "http"), ("x-forwarded-ssl", "on")],
                conflict,
            ),
            (
                &[
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-proto", "http"),
                ],
                conflict,
            ),
            (&[("forwarded", "proto=https")], Ok(Some(Https))),
            (
                &[("forwarded", "for=1.2.3.4;proto=https;by=x")],
                Ok(Some(Https)),
            ),
            (&[("forwarded", "proto=\"https\"")], Ok(Some(Https))),
            (&[("forwarded", "Proto=HTTPS")], Ok(Some(Https))),
            (&[("forwarded", "proto=http")], Ok(Some(Http))),
            (&[("forwarded", "proto=https, proto=http")], Ok(Some(Http))),
            (&[("forwarded", "proto=http, for=1.2.3.4")], Ok(None)),
            (
                &[("forwarded", "proto=http"), ("forwarded", "proto=https")],
                Ok(Some(Https)),
            ),
            (
                &[("forwarded", "for=\"[::1]:80, x\";proto=https")],
                Ok(Some(Https)),
            ),
            (&[("forwarded", "proto=https;proto=https")], Ok(None)),
            (&[("forwarded", "garbage")], Ok(None)),
            (&[("forwarded", "proto=\"https")], Ok(None)),
            (&[("forwarded", "proto=")], Ok(None)),
            (&[("forwarded", "proto=ht tps")], Ok(None)),
            (
                &[("x-forwarded-proto", "http"), ("forwarded", "proto=https")],
                Ok(Some(Http)),
            ),
            (
                &[("x-forwarded-proto", "https"), ("forwarded", "proto=http")],
                Ok(Some(Https)),
            ),
        ];
        let rules = gunicorn_rules();
        for (headers, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in *headers {
                let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) else {
                    panic!("bad test header")
                };
                map.append(k, v);
            }
            assert_eq!(scheme_of(&map, &rules), *want, "{headers:?}");
        }
    }

    #[test]
    fn no_scheme_headers_configured() {
        let Ok(rules) = SchemeHeaders::new([]) else {
            panic!("empty rules")
        };
        let mut map = HeaderMap::new();
        map.insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
        map.insert("forwarded", http::HeaderValue::from_static("proto=https"));
        assert_eq!(scheme_of(&map, &rules), Ok(None));
        assert!(SchemeHeaders::new([("bad name", "x")]).is_err());
    }

    #[test]
    fn a_mount_point_is_a_path_or_nothing() {
        let cases: &[(&[&str], Option<&[u8]>)] = &[
            (&[], None),
            (&["/mnt"], Some(b"/mnt")),
            (&["/mnt/"], Some(b"/mnt")),
            (&[" /a/b// "], Some(b"/a/b")),
            (&[""], Some(b"")),
            (&["/"], Some(b"")),
            (&["mnt"], None),
            (&["/first", "/last"], Some(b"/last")),
            (&["/a%20b"], Some(b"/a b")),
            (&["/caf%C3%A9"], Some("/café".as_bytes())),
            (&["//evil.example"], None),
            (&["/%2fevil.example"], None),
            (&["/mnt?x=1"], None),
            (&["/mnt#x"], None),
            (&["/a/../b"], None),
            (&["/a/%2e%2e"], None),
            (&["/./a"], None),
            (&["/a.b/..c"], Some(b"/a.b/..c")),
            (&["/%5Cevil.example"], None),
            (&["/\\evil.example"], None),
            (&["/%7f"], None),
        ];
        for (values, want) in cases {
            let mut map = HeaderMap::new();
            for v in *values {
                map.append("script_name", http::HeaderValue::from_static(v));
            }
            let got = MountPoint::of(&map);
            assert_eq!(got.as_ref().map(|m| &m.0[..]), *want, "{values:?}");
        }
    }
}
