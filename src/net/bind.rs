//! Bind specs (`HOST:PORT`, `[V6]:PORT`, `unix:PATH`, `fd://N`) and the sockets they open.
//!
//! Parsing is pure and table-tested. Opening sets `SO_REUSEADDR` and the
//! `--backlog`, and reports an address in use as its own error so the CLI
//! can say so in one line. The ready line's URL comes from `Listener::url`,
//! with the real port when port 0 was asked.

use crate::error::StartupError;
use socket2::{Domain, SockAddr, Socket, Type};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindSpec {
    /// A host (name or address) and port, resolved when opened.
    Tcp(String, u16),
    Unix(PathBuf),
    Fd(RawFd),
}

/// The default port when a bind names only a host (gunicorn's habit).
const DEFAULT_PORT: u16 = 8000;

impl BindSpec {
    pub(crate) fn parse(given: &str) -> Result<BindSpec, StartupError> {
        let bad = || StartupError::BadBind(given.to_string());
        // As gunicorn reads a bind: spaces around it and a `tcp://` prefix
        // do not count.
        let s = given.trim();
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(n) = s.strip_prefix("fd://") {
            // A descriptor number: not negative (`fd://-1` is no socket).
            return n
                .parse::<u32>()
                .ok()
                .and_then(|n| RawFd::try_from(n).ok())
                .map(BindSpec::Fd)
                .ok_or_else(bad);
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => DEFAULT_PORT,
                p => p
                    .strip_prefix(':')
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?,
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad());
            }
            return Ok(BindSpec::Tcp(host.to_string(), port));
        }
        match s.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse().map_err(|_| bad())?;
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                if host.contains(':') {
                    return Err(bad());
                }
                Ok(BindSpec::Tcp(host.to_string(), port))
            }
            None if !s.is_empty() => Ok(BindSpec::Tcp(s.to_string(), DEFAULT_PORT)),
            None => Err(bad()),
        }
    }

    /// The socket address a TCP spec names (its host looked up); `None` for
    /// unix sockets and inherited descriptors, which need no lookup.
    pub(crate) fn resolve(&self) -> Result<Option<SocketAddr>, StartupError> {
        let BindSpec::Tcp(host, port) = self else {
            return Ok(None);
        };
        let shown = self.shown();
        (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| StartupError::Bind {
                addr: shown.clone(),
                source: e,
            })?
            .next()
            .map(Some)
            .ok_or(StartupError::BadBind(shown))
    }

    /// How the spec is written in messages.
    fn shown(&self) -> String {
        match self {
            BindSpec::Tcp(host, port) if host.contains(':') => format!("[{host}]:{port}"),
            BindSpec::Tcp(host, port) => format!("{host}:{port}"),
            BindSpec::Unix(path) => format!("unix:{}", path.display()),
            BindSpec::Fd(fd) => format!("fd://{fd}"),
        }
    }

    /// Opens the socket. An IPv6 one takes IPv4 clients too where the
    /// system's default allows it (`[::]:8000` serves `127.0.0.1:8000`, as
    /// gunicorn's), unless `v4_ports` (the ports of the IPv4 binds beside
    /// it) holds its port: then it is IPv6 only, so both can be bound.
    pub(crate) fn open(
        &self,
        backlog: i32,
        reuse_port: bool,
        v4_ports: &[u16],
    ) -> Result<Listener, StartupError> {
        match self {
            BindSpec::Tcp(..) => {
                let shown = self.shown();
                let addr = self
                    .resolve()?
                    .ok_or_else(|| StartupError::BadBind(shown.clone()))?;
                let only_v6 = addr.port() != 0 && v4_ports.contains(&addr.port());
                open_tcp(addr, backlog, reuse_port, only_v6).map_err(|e| bind_error(shown, e))
            }
            BindSpec::Unix(path) => {
                open_unix(path, backlog).map_err(|e| bind_error(self.shown(), e))
            }
            BindSpec::Fd(fd) => {
                // SAFETY: the deployer handed us this descriptor to own.
                let sock = unsafe { Socket::from_raw_fd(*fd) };
                // As gunicorn does: a socket handed over bound but not yet
                // listening would fail every accept. On one that listens,
                // this only sets the backlog again.
                let local = match sock.local_addr().and_then(|a| {
                    sock.listen(backlog)?;
                    Ok(a)
                }) {
                    Ok(a) => a,
                    Err(e) => {
                        // Still the caller's: a start tried again (an
                        // address in use) takes it again, not a number
                        // some other socket got meanwhile.
                        let _ = sock.into_raw_fd();
                        return Err(bind_error(format!("fd://{fd}"), e));
                    }
                };
                match local.as_socket() {
                    Some(_) => Ok(Listener::Tcp(sock.into())),
                    None => Ok(Listener::Unix(sock.into(), None)),
                }
            }
        }
    }
}

/// The ports of the IPv4 addresses among `specs` (their hosts looked up):
/// an IPv6 socket of one of them is opened IPv6 only (`BindSpec::open`).
pub(crate) fn v4_ports<'a>(specs: impl IntoIterator<Item = &'a BindSpec>) -> Vec<u16> {
    specs
        .into_iter()
        .filter_map(|b| b.resolve().ok().flatten())
        .filter(|a| a.ip().to_canonical().is_ipv4())
        .map(|a| a.port())
        .collect()
}

fn bind_error(addr: String, e: std::io::Error) -> StartupError {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        StartupError::AddrInUse(addr)
    } else {
        StartupError::Bind { addr, source: e }
    }
}

fn open_tcp(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
    only_v6: bool,
) -> std::io::Result<Listener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if let std::net::IpAddr::V6(ip) = addr.ip() {
        if ip.to_ipv4_mapped().is_some() {
            // `[::ffff:127.0.0.1]` can only be bound by a dual-stack socket.
            sock.set_only_v6(false)?;
        } else if only_v6 {
            sock.set_only_v6(true)?;
        }
    }
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    Ok(Listener::Tcp(sock.into()))
}

fn open_unix(path: &PathBuf, backlog: i32) -> std::io::Result<Listener> {
    // A stale socket file from a previous run would make bind fail.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            // Not an address in use to wait for: a file to keep, named by mistake.
            return Err(std::io::Error::other("the path exists and is not a socket"));
        }
        let _ = std::fs::remove_file(path);
    }
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.bind(&SockAddr::unix(path)?)?;
    sock.listen(backlog)?;
    Ok(Listener::Unix(sock.into(), Some(path.clone())))
}

/// An open listening socket, not yet registered with the runtime.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    /// The path is removed again at exit when Siesta created it.
    Unix(std::os::unix::net::UnixListener, Option<PathBuf>),
}

impl Listener {
    /// The descriptor (for handing the socket to a new master on USR2).
    pub(crate) fn raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Gives the descriptor up without closing it (a socket the caller
    /// handed over, `fd://N`, when the start fails and may be tried again).
    pub(crate) fn leave_open(self) {
        use std::os::fd::IntoRawFd;
        let _ = match self {
            Listener::Tcp(l) => l.into_raw_fd(),
            Listener::Unix(l, _) => l.into_raw_fd(),
        };
    }

    /// The socket file Siesta created for a unix listener (removed at exit).
    pub(crate) fn made_path(&self) -> Option<&std::path::Path> {
        match self {
            Listener::Unix(_, Some(path)) => Some(path),
            _ => None,
        }
    }

    /// Removes the socket file Siesta created for a unix listener.
    pub(crate) fn unlink(&self) {
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }

    /// A second handle on the same socket (a worker's own copy).
    pub(crate) fn try_clone(&self) -> std::io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l, _) => Listener::Unix(l.try_clone()?, None),
        })
    }

    /// `http://127.0.0.1:8000` or `unix:/run/app.sock`, for the ready line.
    pub(crate) fn url(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "http://?".into(),
            },
            Listener::Unix(l, path) => match (path, l.local_addr()) {
                (Some(p), _) => format!("unix:{}", p.display()),
                (None, Ok(a)) => format!(
                    "unix:{}",
                    a.as_pathname()
                        .map_or_else(|| "?".into(), |p| p.display().to_string())
                ),
                (None, Err(_)) => "unix:?".into(),
            },
        }
    }

    /// (`SERVER_NAME`, `SERVER_PORT`) for requests without a `Host` header.
    pub(crate) fn server_name(&self) -> (String, String) {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => (a.ip().to_string(), a.port().to_string()),
                Err(_) => ("localhost".into(), "80".into()),
            },
            Listener::Unix(..) => ("localhost".into(), "80".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let cases: &[(&str, Option<BindSpec>)] = &[
            (
                "127.0.0.1:8000",
                Some(BindSpec::Tcp("127.0.0.1".into(), 8000)),
            ),
            ("localhost:0", Some(BindSpec::Tcp("localhost".into(), 0))),
            (":9000", Some(BindSpec::Tcp("0.0.0.0".into(), 9000))),
            ("0.0.0.0", Some(BindSpec::Tcp("0.0.0.0".into(), 8000))),
            ("[::1]:8080", Some(BindSpec::Tcp("::1".into(), 8080))),
            ("[::]", Some(BindSpec::Tcp("::".into(), 8000))),
            (
                "unix:/tmp/s.sock",
                Some(BindSpec::Unix("/tmp/s.sock".into())),
            ),
            ("fd://3", Some(BindSpec::Fd(3))),
            // gunicorn's: a `tcp://` prefix, spaces around.
            (
                "tcp://127.0.0.1:0",
                Some(BindSpec::Tcp("127.0.0.1".into(), 0)),
            ),
            (" 127.0.0.1:0 ", Some(BindSpec::Tcp("127.0.0.1".into(), 0))),
            ("tcp://", None),
            ("unix:", None),
            ("fd://x", None),
            ("fd://-1", None),
            ("fd://+3", Some(BindSpec::Fd(3))),
            ("host:port", None),
            ("[::1:80", None),
            ("[nothost]:80", None),
            ("::1:80", None),
            ("127.0.0.1:99999", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(BindSpec::parse(s).ok(), *want, "{s}");
        }
    }

    #[test]
    fn resolve_tcp_only() {
        let tcp = BindSpec::parse("127.0.0.1:80").ok().map(|b| b.resolve());
        assert!(
            matches!(tcp, Some(Ok(Some(a))) if a.port() == 80),
            "{tcp:?}"
        );
        let unix = BindSpec::Unix("/tmp/s.sock".into()).resolve();
        assert!(matches!(unix, Ok(None)), "{unix:?}");
        let bad = BindSpec::Tcp("no-such-host.invalid".into(), 80).resolve();
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn port_zero_and_in_use() -> Result<(), StartupError> {
        let spec = BindSpec::parse("127.0.0.1:0")?;
        let l = spec.open(16, false, &[])?;
        let url = l.url();
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "{url}"
        );
        let port = url.rsplit(':').next().unwrap_or("0");
        // Bound without SO_REUSEPORT, a second listener on the port must fail.
        let again = BindSpec::parse(&format!("127.0.0.1:{port}"))?.open(16, false, &[]);
        assert!(
            matches!(again, Err(StartupError::AddrInUse(_))),
            "{again:?}"
        );
        Ok(())
    }
}
