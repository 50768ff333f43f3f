//! Proxies at the connection: the PROXY preamble, trust, and each request's scheme.
//!
//! `accept` runs once per accepted connection, before hyper sees a byte:
//! with `--proxy-protocol` on it refuses a peer outside `--proxy-allow-from`
//! and reads exactly the preamble (peeking to find a v1 line's end, so not
//! one byte of the request is taken from hyper), bounded in time; then it
//! makes the connection's `ConnInfo`: `REMOTE_ADDR` from the preamble, and
//! whether the peer is trusted to name the scheme (`--forwarded-allow-ips`).
//! A connection refused here is closed without a response. `mark_scheme`
//! runs per request in the service. The rules themselves (parsing, allow
//! lists, which header wins) are `forwarded/`'s.

use crate::error::RequestError;
use crate::exchange::{ConnInfo, ServerName};
use crate::forwarded::proxy_protocol::{self, Header, Invalid, Progress, Version};
use crate::forwarded::{scheme_of, MountPoint, Proxies, Scheme};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// A stream whose next bytes can be looked at without taking them (TCP
/// and unix sockets), so the preamble's end is found without reading past it.
pub(crate) trait Peek:
    AsyncRead + AsyncWrite + std::os::fd::AsRawFd + Unpin + Send + 'static
{
    /// Waits until the socket may have bytes.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// `readable` as a poll, for a connection at rest (`head_clock.rs`).
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
    /// Copies what has arrived into `buf`, leaving it in the socket;
    /// `WouldBlock` when nothing has (and clears the readiness).
    fn try_peek(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Peek for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }

    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Interest::READABLE, || peek_fd(self.as_raw_fd(), buf))
    }
}

impl Peek for UnixStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UnixStream::readable(self)
    }

    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }

    fn try_peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Interest::READABLE, || peek_fd(self.as_raw_fd(), buf))
    }
}

fn peek_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes, and
    // `fd` belongs to the stream borrowed for this call.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Why a connection was closed before hyper saw it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("peer not in --proxy-allow-from")]
    NotAllowed,
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("connection closed inside the PROXY protocol header")]
    Truncated,
    #[error("no complete PROXY protocol header within {0:?}")]
    TimedOut(Duration),
    #[error("reading the PROXY protocol header: {0}")]
    Io(io::Error),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Refused {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Refused::Truncated,
            _ => Refused::Io(e),
        }
    }
}

/// Reads the preamble (when `--proxy-protocol` is on) and describes the
/// connection; `None` when it was refused (logged here), and the caller
/// drops the socket. `bound` limits the time the whole preamble may take.
pub(crate) async fn accept<I: Peek>(
    io: &mut I,
    peer: Option<SocketAddr>,
    server: Arc<ServerName>,
    proxies: &Proxies,
    bound: Duration,
) -> Option<ConnInfo> {
    // Boxed, and only when on: the wait for a preamble would otherwise
    // size every connection's task, all its life.
    let read = match proxies.protocol {
        None => Ok(None),
        Some(_) => Box::pin(preamble(io, peer, proxies, bound)).await,
    };
    let header = match read {
        Ok(h) => h,
        Err(e) => {
            let who = peer.map_or_else(|| "unix socket".to_string(), |p| p.to_string());
            crate::log::error::info(&format!(
                "Closed connection from {who} without a response: {e} [proxy_protocol]"
            ));
            return None;
        }
    };
    let mut conn = ConnInfo::new(peer, server);
    conn.fd = io.as_raw_fd();
    // As in gunicorn, a unix socket peer has no address to check: trusted.
    conn.trusted = peer.is_none_or(|p| proxies.forwarded_allow.contains(p.ip()));
    if let Some(h) = header {
        // An IPv4 client named in IPv6 form (`TCP6 ::ffff:192.0.2.9`) is
        // named as IPv4, as a dual-stack socket's peer is.
        conn.client = h
            .source
            .map(|a| std::net::SocketAddr::new(a.ip().to_canonical(), a.port()));
        conn.tls = h.tls;
    }
    Some(conn)
}

async fn preamble<I: Peek>(
    io: &mut I,
    peer: Option<SocketAddr>,
    proxies: &Proxies,
    bound: Duration,
) -> Result<Option<Header>, Refused> {
    let Some(accept) = proxies.protocol else {
        return Ok(None);
    };
    if peer.is_some_and(|p| !proxies.proxy_allow.contains(p.ip())) {
        return Err(Refused::NotAllowed);
    }
    match tokio::time::timeout(bound, read_exactly(io, accept)).await {
        Ok(read) => read.map(Some),
        Err(_) => Err(Refused::TimedOut(bound)),
    }
}

/// Takes the preamble's bytes off the socket and no more: a v2 header
/// says its length; a v1 line's end is found by peeking, then only the
/// bytes up to its CRLF are read.
async fn read_exactly<I: Peek>(io: &mut I, accept: Version) -> Result<Header, Refused> {
    let mut buf = vec![0u8; proxy_protocol::V1_MAX];
    let mut have = 0;
    loop {
        let take = match proxy_protocol::parse(&buf[..have], accept)? {
            Progress::Done { header, .. } => return Ok(header),
            Progress::Need(Some(total)) => {
                if buf.len() < total {
                    buf.resize(total, 0);
                }
                total - have
            }
            Progress::Need(None) => {
                io.readable().await?;
                let n = match io.try_peek(&mut buf[have..proxy_protocol::V1_MAX]) {
                    Ok(0) => return Err(Refused::Truncated),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e.into()),
                };
                let seen = have + n;
                match proxy_protocol::parse(&buf[..seen], accept)? {
                    Progress::Done { len, .. } => len - have,
                    // Every byte seen so far belongs to the preamble.
                    Progress::Need(_) => n,
                }
            }
        };
        io.read_exact(&mut buf[have..have + take]).await?;
        have += take;
    }
}

/// The request's `wsgi.url_scheme` when a proxy decides it: HTTPS from a
/// PROXY v2 SSL TLV, else from a trusted peer's scheme headers (refused
/// when they disagree). Only HTTPS is marked, in the head's extensions,
/// for `wsgi/environ.rs`; an untrusted connection costs two branches. A
/// trusted peer's `SCRIPT_NAME` header is marked too (`MountPoint`).
pub(crate) fn mark_scheme(
    head: &mut http::request::Parts,
    conn: &ConnInfo,
    proxies: &Proxies,
) -> Result<(), RequestError> {
    let scheme = if conn.tls {
        Some(Scheme::Https)
    } else if conn.trusted {
        scheme_of(&head.headers, &proxies.scheme_headers)?
    } else {
        None
    };
    if scheme == Some(Scheme::Https) {
        head.extensions.insert(Scheme::Https);
    }
    if conn.trusted && proxies.mount_header {
        if let Some(mount) = MountPoint::of(&head.headers) {
            head.extensions.insert(mount);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::{AllowList, SchemeHeaders};
    use tokio::io::AsyncWriteExt;

    fn proxies(protocol: Option<Version>) -> Proxies {
        let (Ok(local), Ok(headers)) = (
            AllowList::parse("127.0.0.1"),
            SchemeHeaders::new([("X-Forwarded-Proto", "https")]),
        ) else {
            panic!("test settings")
        };
        Proxies {
            forwarded_allow: local.clone(),
            scheme_headers: headers,
            mount_header: true,
            protocol,
            proxy_allow: local,
        }
    }

    /// Sends `chunks` (with a pause between them) into a fresh TCP
    /// connection, runs `accept` on the server side and returns what it
    /// made, and the bytes left for hyper.
    async fn accept_bytes(
        chunks: Vec<Vec<u8>>,
        protocol: Option<Version>,
    ) -> (Option<ConnInfo>, Vec<u8>) {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("addr")
        };
        let client = tokio::spawn(async move {
            let Ok(mut c) = TcpStream::connect(addr).await else {
                panic!("connect")
            };
            for chunk in chunks {
                let _ = c.write_all(&chunk).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = c.shutdown().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let Ok((mut s, peer)) = listener.accept().await else {
            panic!("accept")
        };
        let p = proxies(protocol);
        let names = ServerName::new("h".into(), "1".into());
        let conn = accept(&mut s, Some(peer), names, &p, Duration::from_secs(2)).await;
        let mut rest = Vec::new();
        if conn.is_some() {
            let _ = s.read_to_end(&mut rest).await;
        }
        let _ = client.await;
        (conn, rest)
    }

    #[tokio::test]
    async fn reads_exactly_the_preamble() {
        let v2 = {
            let mut b = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x14".to_vec();
            b.extend_from_slice(&[203, 0, 113, 7, 127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x40]);
            b.extend_from_slice(&[0x20, 0, 5, 1, 0, 0, 0, 0]);
            b
        };
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let v1 = b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n".to_vec();
        let split = |b: &[u8], at: &[usize]| {
            let mut out = Vec::new();
            let mut last = 0;
            for &i in at {
                out.push(b[last..i].to_vec());
                last = i;
            }
            out.push(b[last..].to_vec());
            out
        };
        let whole_v1 = [v1.clone(), req.clone()].concat();
        let whole_v2 = [v2.clone(), req.clone()].concat();
        // The chunks a client sends, the client and TLS flag the preamble says.
        type Case = (Vec<Vec<u8>>, (&'static str, bool));
        let cases: Vec<Case> = vec![
            (vec![whole_v1.clone()], ("192.0.2.9:5555", false)),
            (
                split(&whole_v1, &[1, 5, 20, 39, 40]),
                ("192.0.2.9:5555", false),
            ),
            (vec![whole_v2.clone()], ("203.0.113.7:40000", true)),
            (
                split(&whole_v2, &[3, 12, 15, 16, 30]),
                ("203.0.113.7:40000", true),
            ),
        ];
        for (chunks, (client, tls)) in cases {
            let (conn, rest) = accept_bytes(chunks.clone(), Some(Version::Auto)).await;
            let Some(conn) = conn else {
                panic!("refused {chunks:?}")
            };
            assert_eq!(
                (conn.client, conn.tls),
                (client.parse::<SocketAddr>().ok(), tls),
                "{chunks:?}"
            );
            assert!(conn.trusted);
            assert_eq!(rest, req, "hyper gets the request whole: {chunks:?}");
        }
    }

    #[tokio::test]
    async fn refuses_without_a_good_preamble() {
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()],
            vec![b"PROXY TCP4 192.0.2.9".to_vec()],
            vec![b"PROXY TCP4 192.0.2.9 x 1 2\r\n".to_vec()],
            vec![b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01".to_vec()],
            vec![],
        ];
        for chunks in cases {
            let (conn, _) = accept_bytes(chunks.clone(), Some(Version::Auto)).await;
            assert!(conn.is_none(), "{chunks:?}");
        }
    }

    #[tokio::test]
    async fn off_reads_nothing() {
        let req = b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n".to_vec();
        let (conn, rest) = accept_bytes(vec![req.clone()], None).await;
        let Some(conn) = conn else { panic!("refused") };
        assert_eq!(conn.client, None);
        assert_eq!(rest, req);
    }

    #[test]
    fn schemes_follow_trust() {
        let p = proxies(None);
        // Trusted peer, TLS from PROXY v2, X-Forwarded-Proto: marked HTTPS?
        type Case<'a> = (bool, bool, Option<&'a str>, Result<bool, RequestError>);
        let cases: &[Case<'_>] = &[
            (false, false, Some("https"), Ok(false)),
            (true, false, Some("https"), Ok(true)),
            (true, false, Some("http"), Ok(false)),
            (true, false, None, Ok(false)),
            (false, true, None, Ok(true)),
            (false, true, Some("http"), Ok(true)),
        ];
        for &(trusted, tls, header, want) in cases {
            let mut conn = ConnInfo::new(None, ServerName::new("h".into(), "1".into()));
            conn.trusted = trusted;
            conn.tls = tls;
            let mut b = http::Request::builder().uri("/");
            if let Some(v) = header {
                b = b.header("x-forwarded-proto", v);
            }
            let Ok(req) = b.body(()) else {
                panic!("request")
            };
            let (mut head, ()) = req.into_parts();
            let got = mark_scheme(&mut head, &conn, &p)
                .map(|()| head.extensions.get::<Scheme>() == Some(&Scheme::Https));
            assert_eq!(got, want, "{trusted} {tls} {header:?}");
        }
    }
}
