//! The PROXY protocol preamble (HAProxy's spec, versions 1 and 2), parsed from bytes.
//!
//! A load balancer that speaks it (`send-proxy`, `send-proxy-v2`, nginx
//! `proxy_protocol on`) writes one preamble at the start of each TCP
//! connection saying who the client was: v1 is one text line ending in CRLF
//! within 107 bytes, v2 a 16-byte binary header whose last two bytes give
//! the length of what follows (addresses, then TLVs, of which the SSL one
//! says the client came over TLS). `parse` looks at the bytes read so far
//! and says how many more it needs, or where the preamble ends and what it
//! said, or why it is not one. It does no I/O: reading exactly the
//! preamble, the time bound and who may send one are `server/proxy.rs`'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// Which versions `--proxy-protocol` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
    /// Either, told apart by the first byte.
    Auto,
}

/// What a complete preamble said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The client's address and port; `None` when the sender gave none
    /// (v1 `UNKNOWN`, v2 `LOCAL` health checks, an unspecified or unix
    /// family), so the connection's own peer stands.
    pub source: Option<SocketAddr>,
    /// v2's SSL TLV with its client-SSL bit: the client spoke TLS to the proxy.
    pub tls: bool,
}

/// How far a preamble has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More bytes are needed: `Some(n)` when the preamble is known to be
    /// `n` bytes long in all, `None` while its end is not known yet (v1
    /// before its CRLF). Every byte seen so far belongs to the preamble.
    Need(Option<usize>),
    /// The preamble is the first `len` bytes; what follows is HTTP.
    Done { len: usize, header: Header },
}

/// Why the bytes are not an acceptable preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum Invalid {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("a PROXY protocol v{0} header, but --proxy-protocol does not accept v{0}")]
    VersionNotAccepted(u8),
    #[error("malformed PROXY protocol v1 line: {0}")]
    V1(&'static str),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
}

/// Longest v1 line, CRLF included (the spec's bound).
pub(crate) const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_HEADER: usize = 16;
/// v2 TLV type of the SSL information, and its client-SSL bit.
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_CLIENT_SSL: u8 = 0x01;

/// Reads the preamble at the start of `buf` (the bytes received so far).
pub(crate) fn parse(buf: &[u8], accept: Version) -> Result<Progress, Invalid> {
    let Some(&first) = buf.first() else {
        return Ok(Progress::Need(None));
    };
    match first {
        b'P' if accept == Version::V2 => Err(Invalid::VersionNotAccepted(1)),
        b'P' => v1(buf),
        b'\r' if accept == Version::V1 => {
            same_prefix(buf, V2_SIGNATURE)?;
            Err(Invalid::VersionNotAccepted(2))
        }
        b'\r' => v2(buf),
        _ => Err(Invalid::Missing),
    }
}

/// Whether `buf` can still be the start of `expected` (or starts with it).
fn same_prefix(buf: &[u8], expected: &[u8]) -> Result<(), Invalid> {
    let n = buf.len().min(expected.len());
    if buf[..n] == expected[..n] {
        Ok(())
    } else {
        Err(Invalid::Missing)
    }
}

fn v1(buf: &[u8]) -> Result<Progress, Invalid> {
    same_prefix(buf, V1_PREFIX)?;
    let seen = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = seen.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(Invalid::V1("no CRLF within 107 bytes"));
        }
        return Ok(Progress::Need(None));
    };
    match seen.get(cr..cr + 2) {
        Some(b"\r\n") => {}
        Some(_) => return Err(Invalid::V1("CR or LF alone")),
        None if seen[cr] == b'\n' => return Err(Invalid::V1("CR or LF alone")),
        None if buf.len() < V1_MAX => return Ok(Progress::Need(None)),
        None => return Err(Invalid::V1("no CRLF within 107 bytes")),
    }
    let line =
        std::str::from_utf8(&seen[V1_PREFIX.len()..cr]).map_err(|_| Invalid::V1("not ASCII"))?;
    if !line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Invalid::V1("control characters"));
    }
    let source = v1_fields(line)?;
    Ok(Progress::Done {
        len: cr + 2,
        header: Header { source, tls: false },
    })
}

/// `TCP4 SRC DST SPORT DPORT`, `TCP6 ...` or `UNKNOWN[ anything]`.
fn v1_fields(line: &str) -> Result<Option<SocketAddr>, Invalid> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = fields[..] else {
        return Err(Invalid::V1("expected 6 fields separated by single spaces"));
    };
    let (src, _dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| Invalid::V1("bad IPv4 source"))?),
            IpAddr::V4(
                dst.parse()
                    .map_err(|_| Invalid::V1("bad IPv4 destination"))?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| Invalid::V1("bad IPv6 source"))?),
            IpAddr::V6(
                dst.parse()
                    .map_err(|_| Invalid::V1("bad IPv6 destination"))?,
            ),
        ),
        _ => return Err(Invalid::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let sport = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Some(SocketAddr::new(src, sport)))
}

/// A decimal port from 0 to 65535, without sign or leading zero.
fn v1_port(s: &str) -> Result<u16, Invalid> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(Invalid::V1("bad port"));
    }
    s.parse().map_err(|_| Invalid::V1("bad port"))
}

fn v2(buf: &[u8]) -> Result<Progress, Invalid> {
    same_prefix(buf, V2_SIGNATURE)?;
    if buf.len() < V2_HEADER {
        return Ok(Progress::Need(Some(V2_HEADER)));
    }
    let (ver_cmd, fam, len) = (buf[12], buf[13], u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(Invalid::V2("version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Invalid::V2("command is neither LOCAL nor PROXY")),
    };
    let total = V2_HEADER + usize::from(len);
    let Some(body) = buf.get(V2_HEADER..total) else {
        return Ok(Progress::Need(Some(total)));
    };
    let done = |source, tls| Progress::Done {
        len: total,
        header: Header { source, tls },
    };
    if local {
        // A health check from the proxy itself: addresses and TLVs are
        // to be ignored, the connection's own endpoints stand.
        return Ok(done(None, false));
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    let addr_len = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(Invalid::V2("unknown address family")),
    };
    if family != 0 && transport != 1 {
        return Err(Invalid::V2("transport is not STREAM"));
    }
    if transport > 2 {
        return Err(Invalid::V2("unknown transport"));
    }
    let Some(addrs) = body.get(..addr_len) else {
        return Err(Invalid::V2("length shorter than the addresses"));
    };
    let source = match family {
        1 => {
            let ip = Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([addrs[8], addrs[9]]),
            ))
        }
        2 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addrs[..16]);
            let port = u16::from_be_bytes([addrs[32], addrs[33]]);
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        _ => None,
    };
    let tls = tls_from_tlvs(&body[addr_len..])?;
    Ok(done(source, tls))
}

/// Walks the TLVs after the addresses; true when the SSL one has its
/// client-SSL bit set.
fn tls_from_tlvs(mut tlvs: &[u8]) -> Result<bool, Invalid> {
    let mut tls = false;
    while !tlvs.is_empty() {
        let [kind, hi, lo, rest @ ..] = tlvs else {
            return Err(Invalid::V2("truncated TLV"));
        };
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(value) = rest.get(..n) else {
            return Err(Invalid::V2("TLV longer than the header"));
        };
        if *kind == PP2_TYPE_SSL {
            let Some(&client) = value.first().filter(|_| value.len() >= 5) else {
                return Err(Invalid::V2("SSL TLV too short"));
            };
            tls = client & PP2_CLIENT_SSL != 0;
        }
        tlvs = &rest[n..];
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap_or_else(|_| panic!("bad test address {s}")))
    }

    fn done(len: usize, source: Option<SocketAddr>, tls: bool) -> Result<Progress, Invalid> {
        Ok(Progress::Done {
            len,
            header: Header { source, tls },
        })
    }

    /// A v2 header: command, family/transport byte, body.
    fn v2_bytes(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(fam);
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn inet(src: [u8; 4], sport: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut body = src.to_vec();
        body.extend_from_slice(&[127, 0, 0, 1]);
        body.extend_from_slice(&sport.to_be_bytes());
        body.extend_from_slice(&8000u16.to_be_bytes());
        body.extend_from_slice(tlvs);
        v2_bytes(1, 0x11, &body)
    }

    #[test]
    fn v1_lines() {
        let line = |s: &str| s.as_bytes().to_vec();
        let max = {
            let mut s = "PROXY UNKNOWN ".to_string();
            s.push_str(&"x".repeat(V1_MAX - s.len() - 2));
            s.push_str("\r\n");
            s
        };
        let cases: Vec<(Vec<u8>, Version, Result<Progress, Invalid>)> = vec![
            (
                line("PROXY TCP4 192.0.2.1 127.0.0.1 56324 8000\r\nGET / HTTP/1.1\r\n"),
                Version::V1,
                done(43, addr("192.0.2.1:56324"), false),
            ),
            (
                line("PROXY TCP6 2001:db8::1 ::1 65535 443\r\n"),
                Version::Auto,
                done(38, addr("[2001:db8::1]:65535"), false),
            ),
            (
                line("PROXY UNKNOWN\r\n"),
                Version::V1,
                done(15, None, false),
            ),
            (
                line("PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n"),
                Version::V1,
                done(39, None, false),
            ),
            (
                max.clone().into_bytes(),
                Version::V1,
                done(V1_MAX, None, false),
            ),
            (line(""), Version::V1, Ok(Progress::Need(None))),
            (line("PROX"), Version::V1, Ok(Progress::Need(None))),
            (
                line("PROXY TCP4 1.2.3.4"),
                Version::V1,
                Ok(Progress::Need(None)),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r"),
                Version::V1,
                Ok(Progress::Need(None)),
            ),
            (
                line("GET / HTTP/1.1\r\n"),
                Version::V1,
                Err(Invalid::Missing),
            ),
            (line("PRIX"), Version::Auto, Err(Invalid::Missing)),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n"),
                Version::V2,
                Err(Invalid::VersionNotAccepted(1)),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n"),
                Version::V1,
                Err(Invalid::V1("CR or LF alone")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rx"),
                Version::V1,
                Err(Invalid::V1("CR or LF alone")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n"),
                Version::V1,
                Err(Invalid::V1("expected 6 fields separated by single spaces")),
            ),
            (
                line("PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n"),
                Version::V1,
                Err(Invalid::V1("expected 6 fields separated by single spaces")),
            ),
            (
                line("PROXY TCP4 ::1 1.2.3.4 1 2\r\n"),
                Version::V1,
                Err(Invalid::V1("bad IPv4 source")),
            ),
            (
                line("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"),
                Version::V1,
                Err(Invalid::V1("bad IPv6 source")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3 1 2\r\n"),
                Version::V1,
                Err(Invalid::V1("bad IPv4 destination")),
            ),
            (
                line("PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n"),
                Version::V1,
                Err(Invalid::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n"),
                Version::V1,
                Err(Invalid::V1("bad port")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n"),
                Version::V1,
                Err(Invalid::V1("bad port")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n"),
                Version::V1,
                Err(Invalid::V1("bad port")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 1 \r\n"),
                Version::V1,
                Err(Invalid::V1("bad port")),
            ),
            (
                line("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\t\r\n"),
                Version::V1,
                Err(Invalid::V1("control characters")),
            ),
            (
                line("PROXY UNKNOWN\x01\r\n"),
                Version::V1,
                Err(Invalid::V1("control characters")),
            ),
            (
                format!("PROXY UNKNOWN {}", "x".repeat(100)).into_bytes(),
                Version::V1,
                Err(Invalid::V1("no CRLF within 107 bytes")),
            ),
            (
                format!("{}x\r\n", &max[..max.len() - 2]).into_bytes(),
                Version::V1,
                Err(Invalid::V1("no CRLF within 107 bytes")),
            ),
        ];
        for (bytes, accept, want) in cases {
            assert_eq!(
                parse(&bytes, accept),
                want,
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn v2_headers() {
        let ssl = |client: u8| vec![PP2_TYPE_SSL, 0, 5, client, 0, 0, 0, 0];
        let mut v6 = Vec::new();
        v6.extend_from_slice(
            &"2001:db8::7"
                .parse::<Ipv6Addr>()
                .map_or([0; 16], |a| a.octets()),
        );
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0x1f, 0x90, 0, 80]);
        let with_http = {
            let mut b = inet([203, 0, 113, 9], 40000, &[]);
            b.extend_from_slice(b"GET / HTTP/1.1\r\n");
            b
        };
        let cases: Vec<(Vec<u8>, Version, Result<Progress, Invalid>)> = vec![
            (
                inet([203, 0, 113, 9], 40000, &[]),
                Version::V2,
                done(28, addr("203.0.113.9:40000"), false),
            ),
            (
                with_http,
                Version::Auto,
                done(28, addr("203.0.113.9:40000"), false),
            ),
            (
                inet([10, 0, 0, 1], 1, &ssl(1)),
                Version::V2,
                done(36, addr("10.0.0.1:1"), true),
            ),
            (
                inet([10, 0, 0, 1], 1, &ssl(0)),
                Version::V2,
                done(36, addr("10.0.0.1:1"), false),
            ),
            (
                inet([10, 0, 0, 1], 1, &[0x04, 0, 2, 0, 0]),
                Version::V2,
                done(33, addr("10.0.0.1:1"), false),
            ),
            (
                v2_bytes(1, 0x21, &v6),
                Version::V2,
                done(52, addr("[2001:db8::7]:8080"), false),
            ),
            (v2_bytes(0, 0x00, &[]), Version::V2, done(16, None, false)),
            (
                v2_bytes(0, 0x11, &[1, 2, 3]),
                Version::V2,
                done(19, None, false),
            ),
            (v2_bytes(1, 0x00, &[]), Version::V2, done(16, None, false)),
            (
                v2_bytes(1, 0x31, &[0; 216]),
                Version::V2,
                done(232, None, false),
            ),
            (
                V2_SIGNATURE[..5].to_vec(),
                Version::V2,
                Ok(Progress::Need(Some(16))),
            ),
            (
                inet([1, 1, 1, 1], 1, &[])[..20].to_vec(),
                Version::V2,
                Ok(Progress::Need(Some(28))),
            ),
            (b"\r\n\r\nx".to_vec(), Version::V2, Err(Invalid::Missing)),
            (
                inet([1, 1, 1, 1], 1, &[]),
                Version::V1,
                Err(Invalid::VersionNotAccepted(2)),
            ),
            (b"GET".to_vec(), Version::V2, Err(Invalid::Missing)),
            (
                {
                    let mut b = inet([1, 1, 1, 1], 1, &[]);
                    b[12] = 0x11;
                    b
                },
                Version::V2,
                Err(Invalid::V2("version is not 2")),
            ),
            (
                {
                    let mut b = inet([1, 1, 1, 1], 1, &[]);
                    b[12] = 0x22;
                    b
                },
                Version::V2,
                Err(Invalid::V2("command is neither LOCAL nor PROXY")),
            ),
            (
                v2_bytes(1, 0x41, &[]),
                Version::V2,
                Err(Invalid::V2("unknown address family")),
            ),
            (
                v2_bytes(1, 0x12, &[0; 12]),
                Version::V2,
                Err(Invalid::V2("transport is not STREAM")),
            ),
            (
                v2_bytes(1, 0x03, &[]),
                Version::V2,
                Err(Invalid::V2("unknown transport")),
            ),
            (
                v2_bytes(1, 0x11, &[0; 11]),
                Version::V2,
                Err(Invalid::V2("length shorter than the addresses")),
            ),
            (
                v2_bytes(1, 0x21, &[0; 35]),
                Version::V2,
                Err(Invalid::V2("length shorter than the addresses")),
            ),
            (
                inet([1, 1, 1, 1], 1, &[0x20, 0]),
                Version::V2,
                Err(Invalid::V2("truncated TLV")),
            ),
            (
                inet([1, 1, 1, 1], 1, &[0x20, 0, 9, 1]),
                Version::V2,
                Err(Invalid::V2("TLV longer than the header")),
            ),
            (
                inet([1, 1, 1, 1], 1, &[0x20, 0, 1, 1]),
                Version::V2,
                Err(Invalid::V2("SSL TLV too short")),
            ),
        ];
        for (bytes, accept, want) in cases {
            assert_eq!(parse(&bytes, accept), want, "{bytes:?}");
        }
    }

    /// A preamble as a proxy would write it, for the round-trip property.
    fn encode(v2: bool, src: SocketAddr, tls: bool) -> Vec<u8> {
        match (v2, src) {
            (false, SocketAddr::V4(a)) => {
                format!("PROXY TCP4 {} 127.0.0.1 {} 80\r\n", a.ip(), a.port()).into_bytes()
            }
            (false, SocketAddr::V6(a)) => {
                format!("PROXY TCP6 {} ::1 {} 80\r\n", a.ip(), a.port()).into_bytes()
            }
            (true, SocketAddr::V4(a)) => {
                let tlv: &[u8] = if tls {
                    &[0x20, 0, 5, 1, 0, 0, 0, 0]
                } else {
                    &[]
                };
                inet(a.ip().octets(), a.port(), tlv)
            }
            (true, SocketAddr::V6(a)) => {
                let mut body = a.ip().octets().to_vec();
                body.extend_from_slice(&[0; 16]);
                body.extend_from_slice(&a.port().to_be_bytes());
                body.extend_from_slice(&[0, 80]);
                if tls {
                    body.extend_from_slice(&[0x20, 0, 5, 1, 0, 0, 0, 0]);
                }
                v2_bytes(1, 0x21, &body)
            }
        }
    }

    proptest! {
        /// Arbitrary bytes never panic, and every answer is consistent
        /// with the buffer: an end within it, a need beyond it.
        #[test]
        fn proxy_props_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), v in 0u8..3) {
            let accept = [Version::V1, Version::V2, Version::Auto][usize::from(v)];
            match parse(&bytes, accept) {
                Ok(Progress::Done { len, .. }) => prop_assert!(len <= bytes.len()),
                Ok(Progress::Need(Some(n))) => prop_assert!(n > bytes.len()),
                Ok(Progress::Need(None)) => prop_assert!(bytes.len() < V1_MAX),
                Err(_) => {}
            }
        }

        /// Bytes that start like a preamble (the signatures are rarely hit
        /// by chance) never panic either.
        #[test]
        fn proxy_props_never_panics_after_a_signature(
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            v2 in any::<bool>(),
        ) {
            let mut bytes = if v2 { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
            bytes.extend_from_slice(&tail);
            let _ = parse(&bytes, Version::Auto);
        }

        /// What a proxy writes parses back to the same client, and every
        /// prefix of it asks for more instead of failing or finishing early.
        #[test]
        fn proxy_props_round_trip(
            v2 in any::<bool>(),
            src in any::<SocketAddr>(),
            tls in any::<bool>(),
            http in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let src = SocketAddr::new(src.ip(), src.port());
            let preamble = encode(v2, src, tls);
            let mut bytes = preamble.clone();
            bytes.extend_from_slice(&http);
            let want = Progress::Done {
                len: preamble.len(),
                header: Header { source: Some(src), tls: tls && v2 },
            };
            prop_assert_eq!(parse(&bytes, Version::Auto), Ok(want));
            for cut in 0..preamble.len() {
                let got = parse(&preamble[..cut], Version::Auto);
                prop_assert!(matches!(got, Ok(Progress::Need(_))), "{cut}: {got:?}");
            }
        }
    }
}
