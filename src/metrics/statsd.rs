//! `--statsd-host`: gunicorn's StatsD metrics, sent over UDP (or a unix datagram socket).
//!
//! Names are gunicorn's (`gunicorn/instrument/statsd.py`), after
//! `--statsd-prefix`: `gunicorn.requests` and `gunicorn.request.status.<code>`
//! (counters), `gunicorn.request.duration` (a timer in ms),
//! `gunicorn.workers` (a gauge, from the master) and `gunicorn.log.<level>`
//! (warning, error, critical). In a worker the request path only pushes a
//! small event into a bounded lock-free queue (`request`): no syscall, no
//! lock, no GIL; a `siesta-statsd` thread wakes every 100 ms, sums the
//! counters and sends the lines in datagrams of at most 1400 bytes. A full
//! queue drops the event. The master has no thread, so it sends its few
//! lines directly on a non-blocking socket. Nothing here ever blocks.

use std::fmt::Write as _;
use std::io;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

/// Largest datagram sent (fits a typical MTU).
const DATAGRAM: usize = 1400;
/// How often the worker's thread sends what was queued.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Events a worker queues between two flushes before dropping.
const QUEUE: usize = 16384;

/// Where `--statsd-host` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Udp(String),
    Unix(String),
}

/// `HOST:PORT`, `HOST` (port 8125), `unix://PATH` or `unix:PATH`.
pub(crate) fn parse_target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    if let Some(p) = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
    {
        if p.is_empty() {
            return Err(format!("--statsd-host {s:?}: no socket path"));
        }
        return Ok(Target::Unix(p.to_string()));
    }
    if s.is_empty() {
        return Err("--statsd-host is empty".into());
    }
    let bad = || format!("{s:?} is not HOST:PORT, HOST or unix://PATH");
    let v6 = |h: &str| h.parse::<std::net::Ipv6Addr>().is_ok();
    if v6(s) {
        // `::1:8125` reads as one address as well as an address and a
        // port: an IPv6 address goes in brackets.
        return Err(format!(
            "{s:?} is not HOST:PORT, HOST or unix://PATH (write [{s}])"
        ));
    }
    if s.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(v6)
    {
        return Ok(Target::Udp(format!("{s}:8125")));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    // A host is a name, an IPv4 address or a bracketed IPv6 one: another
    // colon in it means a mistyped address, not a host.
    let bracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(v6);
    if host.is_empty()
        || (host.contains(':') && !bracketed)
        || host.contains(['[', ']']) && !bracketed
    {
        return Err(bad());
    }
    match port {
        None => Ok(Target::Udp(format!("{s}:8125"))),
        Some(p) if p.parse::<u16>().is_ok_and(|n| n > 0) => Ok(Target::Udp(s.to_string())),
        Some(_) => Err(bad()),
    }
}

/// gunicorn's prefix rule: a non-empty prefix ends in exactly one dot.
pub(crate) fn normalize_prefix(p: &str) -> String {
    let p = p.trim_end_matches('.');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}.")
    }
}

enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Socket {
    fn connect(t: &Target) -> io::Result<Socket> {
        Ok(match t {
            Target::Udp(addr) => {
                let target = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())?
                    .next()
                    .ok_or_else(|| io::Error::other(format!("{addr} does not resolve")))?;
                let local: std::net::SocketAddr = if target.is_ipv6() {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(local)?;
                s.connect(target)?;
                s.set_nonblocking(true)?;
                Socket::Udp(s)
            }
            Target::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                s.set_nonblocking(true)?;
                Socket::Unix(s)
            }
        })
    }

    /// Sends one datagram; a full buffer or an absent server drops it.
    fn send(&self, buf: &[u8]) {
        let _ = match self {
            Socket::Udp(s) => s.send(buf),
            Socket::Unix(s) => s.send(buf),
        };
    }
}

/// A socket and the prefix of every name.
struct Sink {
    socket: Socket,
    prefix: String,
}

impl Sink {
    fn open(host: &str, prefix: &str) -> Result<Sink, String> {
        let target = parse_target(host)?;
        let socket = Socket::connect(&target).map_err(|e| format!("--statsd-host {host}: {e}"))?;
        Ok(Sink {
            socket,
            prefix: normalize_prefix(prefix),
        })
    }

    /// Sends `lines` packed into datagrams.
    fn send_lines(&self, lines: &[String]) {
        let mut buf = String::new();
        for l in lines {
            if !buf.is_empty() && buf.len() + 1 + l.len() > DATAGRAM {
                self.socket.send(buf.as_bytes());
                buf.clear();
            }
            if !buf.is_empty() {
                buf.push('\n');
            }
            buf.push_str(l);
        }
        if !buf.is_empty() {
            self.socket.send(buf.as_bytes());
        }
    }
}

/// What a worker's request path queues.
#[derive(Debug)]
enum Event {
    Request {
        status: u16,
        micros: u64,
    },
    Log(&'static str),
    /// Send now, then say so (`flush`).
    Flush(SyncSender<()>),
}

/// The master's sink (it sends directly).
static DIRECT: OnceLock<Sink> = OnceLock::new();
/// A worker's queue to its sender thread.
static QUEUED: OnceLock<SyncSender<Event>> = OnceLock::new();

/// In the master: open the socket (an error is for the deployer).
pub(crate) fn start_master(host: &str, prefix: &str) -> Result<(), String> {
    let sink = Sink::open(host, prefix)?;
    let _ = DIRECT.set(sink);
    crate::log::error::on_write(log_level);
    Ok(())
}

/// In a worker: its own socket and the thread that sends.
pub(crate) fn start_worker(host: &str, prefix: &str) -> Result<(), String> {
    let sink = Sink::open(host, prefix)?;
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("siesta-statsd".into())
        .spawn(move || sender(sink, rx))
        .map_err(|e| format!("cannot start the StatsD thread: {e}"))?;
    let _ = QUEUED.set(tx);
    crate::log::error::on_write(log_level);
    Ok(())
}

/// A request ended (from `server/end.rs`): never blocks, never allocates.
pub(crate) fn request(status: u16, elapsed: Duration) {
    if status == 0 {
        return; // no response went out: gunicorn logs no access either
    }
    if let Some(tx) = QUEUED.get() {
        let micros = elapsed.as_micros() as u64;
        if let Err(TrySendError::Full(_)) = tx.try_send(Event::Request { status, micros }) {
            // Dropped: the sender thread is behind; StatsD is lossy anyway.
        }
    }
}

/// Sends what the worker's thread holds now, and waits (at most `within`)
/// until it went: a worker leaving (its drain done, before it exits) would
/// otherwise lose its last batch of counts.
pub(crate) fn flush(within: Duration) {
    let Some(tx) = QUEUED.get() else { return };
    let (done_tx, done_rx) = sync_channel(1);
    if tx.send(Event::Flush(done_tx)).is_ok() {
        let _ = done_rx.recv_timeout(within);
    }
}

/// The master's worker count changed.
pub(crate) fn workers(n: usize) {
    if let Some(s) = DIRECT.get() {
        s.send_lines(&[format!("{}gunicorn.workers:{n}|g", s.prefix)]);
    }
}

/// The error log wrote a line at `level` (gunicorn counts warning and
/// above, and a logged exception as `exception` alone).
fn log_level(level: crate::log::error::Level, exception: bool) {
    use crate::log::error::Level;
    let name = match level {
        _ if exception => "exception",
        Level::Warning => "warning",
        Level::Error => "error",
        Level::Critical => "critical",
        Level::Debug | Level::Info => return,
    };
    if let Some(tx) = QUEUED.get() {
        let _ = tx.try_send(Event::Log(name));
    } else if let Some(s) = DIRECT.get() {
        s.send_lines(&[format!("{}gunicorn.log.{name}:1|c", s.prefix)]);
    }
}

/// The worker's sender thread: every `FLUSH_EVERY`, what was queued goes out.
fn sender(sink: Sink, rx: Receiver<Event>) {
    let mut lines = Vec::new();
    let mut flushed: Vec<SyncSender<()>> = Vec::new();
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let mut requests = 0u64;
        let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
        let mut logs = std::collections::BTreeMap::<&'static str, u64>::new();
        lines.clear();
        loop {
            match rx.try_recv() {
                Ok(Event::Request { status, micros }) => {
                    requests += 1;
                    *statuses.entry(status).or_default() += 1;
                    lines.push(duration_line(&sink.prefix, micros));
                }
                Ok(Event::Log(level)) => *logs.entry(level).or_default() += 1,
                Ok(Event::Flush(done)) => flushed.push(done),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let p = &sink.prefix;
        if requests > 0 {
            lines.push(format!("{p}gunicorn.requests:{requests}|c"));
        }
        for (code, n) in statuses {
            lines.push(format!("{p}gunicorn.request.status.{code}:{n}|c"));
        }
        for (level, n) in logs {
            lines.push(format!("{p}gunicorn.log.{level}:{n}|c"));
        }
        sink.send_lines(&lines);
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// `gunicorn.request.duration` in milliseconds with gunicorn's precision (µs).
fn duration_line(prefix: &str, micros: u64) -> String {
    let mut s = String::with_capacity(prefix.len() + 40);
    let _ = write!(
        s,
        "{prefix}gunicorn.request.duration:{}.{:03}|ms",
        micros / 1000,
        micros % 1000
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let cases = [
            ("localhost:8125", Ok(Target::Udp("localhost:8125".into()))),
            ("10.0.0.1", Ok(Target::Udp("10.0.0.1:8125".into()))),
            ("[::1]:9125", Ok(Target::Udp("[::1]:9125".into()))),
            (
                "unix:///run/statsd.sock",
                Ok(Target::Unix("/run/statsd.sock".into())),
            ),
            ("unix:/run/s", Ok(Target::Unix("/run/s".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(parse_target(input), want, "{input}");
        }
        assert!(parse_target("::1").is_err());
        assert!(parse_target("::1:8125").is_err());
        assert_eq!(parse_target("[::1]"), Ok(Target::Udp("[::1]:8125".into())));
        assert!(parse_target("unix://").is_err());
        assert!(parse_target("").is_err());
        for bad in [
            "bad:host:x",
            "bad:host:1",
            "host:",
            "host:99999",
            "host:0",
            ":8125",
            "[x]:1",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes() {
        for (input, want) in [
            ("", ""),
            ("app", "app."),
            ("app.", "app."),
            ("a.b..", "a.b."),
        ] {
            assert_eq!(normalize_prefix(input), want);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            duration_line("x.", 12_345),
            "x.gunicorn.request.duration:12.345|ms"
        );
        assert_eq!(duration_line("", 7), "gunicorn.request.duration:0.007|ms");
    }
}
