//! The access log: gunicorn's `--access-logformat` atoms, rendered per request.
//!
//! The format string is parsed once into pieces (`Format::parse`, pure and
//! unit-tested); each finished request renders its line into a reused
//! buffer and writes it in one call. Supported atoms: `h l u t r m U q H s
//! B b f a T M D L p` and `{header}i`; unknown atoms render as `-`.

use super::Civil;
use http::request::Parts;
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// gunicorn's default `--access-logformat`.
#[cfg(test)]
pub(crate) const DEFAULT_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    RemoteAddr,
    Dash,
    User,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    BytesZero,
    BytesDash,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    Header(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Atom(Atom),
}

/// A parsed `--access-logformat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format(Vec<Piece>);

impl Format {
    pub(crate) fn parse(fmt: &str) -> Format {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        while let Some(start) = rest.find("%(") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(")s") else { break };
            lit.push_str(&rest[..start]);
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Atom(atom(&after[..end])));
            rest = &after[end + 2..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Format(pieces)
    }
}

fn atom(name: &str) -> Atom {
    match name {
        "h" => Atom::RemoteAddr,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "s" => Atom::Status,
        "B" => Atom::BytesZero,
        "b" => Atom::BytesDash,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        n if n.starts_with('{') && n.ends_with("}i") => {
            Atom::Header(n[1..n.len() - 2].to_ascii_lowercase())
        }
        _ => Atom::Unknown,
    }
}

/// What one finished request contributes to its line.
pub(crate) struct Entry<'a> {
    /// `None` for a head hyper refused before it was parsed: its atoms are `-`.
    pub head: Option<&'a Parts>,
    pub peer: Option<SocketAddr>,
    pub status: u16,
    pub sent: u64,
    pub received_at: SystemTime,
    pub elapsed: Duration,
}

fn protocol(head: &Parts) -> &'static str {
    match head.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

fn header<'a>(head: &'a Parts, name: &str) -> &'a str {
    head.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// The user name of a `Basic` authorization, for `%(u)s`.
fn basic_user(head: &Parts) -> Option<String> {
    let v = head
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, creds) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(creds.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.clone(), |(u, _)| u.to_string()),
    )
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = chunk.len();
        if n < 2 {
            return None;
        }
        out.push((acc >> 16) as u8);
        if n > 2 {
            out.push((acc >> 8) as u8);
        }
        if n > 3 {
            out.push(acc as u8);
        }
    }
    Some(out)
}

impl Format {
    pub(crate) fn render(&self, e: &Entry<'_>, out: &mut String) {
        for piece in &self.0 {
            let a = match piece {
                Piece::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Piece::Atom(a) => a,
            };
            let _ = match (a, e.head) {
                (Atom::RemoteAddr, _) => match e.peer {
                    Some(p) => write!(out, "{}", p.ip()),
                    None => write!(out, "-"),
                },
                (Atom::Dash | Atom::Unknown, _) => write!(out, "-"),
                (Atom::Time, _) => {
                    write!(out, "[{}]", Civil::from_system(e.received_at).clf_stamp())
                }
                (Atom::Status, _) => write!(out, "{}", e.status),
                (Atom::BytesZero, _) => write!(out, "{}", e.sent),
                (Atom::BytesDash, _) if e.sent == 0 => write!(out, "-"),
                (Atom::BytesDash, _) => write!(out, "{}", e.sent),
                (Atom::Seconds, _) => write!(out, "{}", e.elapsed.as_secs()),
                (Atom::Millis, _) => write!(out, "{}", e.elapsed.as_millis()),
                (Atom::Micros, _) => write!(out, "{}", e.elapsed.as_micros()),
                (Atom::DecimalSeconds, _) => write!(out, "{:.6}", e.elapsed.as_secs_f64()),
                (Atom::Pid, _) => write!(out, "<{}>", std::process::id()),
                // The rest describe the request head; hyper may have refused it unparsed.
                (_, None) => write!(out, "-"),
                (Atom::User, Some(h)) => write!(out, "{}", basic_user(h).as_deref().unwrap_or("-")),
                (Atom::RequestLine, Some(h)) => {
                    let target = h.uri.path_and_query().map_or("/", |p| p.as_str());
                    write!(out, "{} {} {}", h.method, target, protocol(h))
                }
                (Atom::Method, Some(h)) => write!(out, "{}", h.method),
                (Atom::Path, Some(h)) => write!(out, "{}", h.uri.path()),
                (Atom::Query, Some(h)) => write!(out, "{}", h.uri.query().unwrap_or("")),
                (Atom::Protocol, Some(h)) => write!(out, "{}", protocol(h)),
                (Atom::Referer, Some(h)) => write!(out, "{}", header(h, "referer")),
                (Atom::UserAgent, Some(h)) => write!(out, "{}", header(h, "user-agent")),
                (Atom::Header(name), Some(h)) => write!(out, "{}", header(h, name)),
            };
        }
        out.push('\n');
    }
}

/// `--access-logfile`: where lines go, and in which format.
pub(crate) struct AccessLog {
    format: Format,
    path: String,
    sink: Mutex<Box<dyn Write + Send>>,
}

fn open_sink(path: &str) -> io::Result<Box<dyn Write + Send>> {
    Ok(if path == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(OpenOptions::new().create(true).append(true).open(path)?)
    })
}

impl AccessLog {
    /// `-` is stdout; anything else a file opened for appending.
    pub(crate) fn open(path: &str, format: &str) -> io::Result<AccessLog> {
        Ok(AccessLog {
            format: Format::parse(format),
            path: path.to_string(),
            sink: Mutex::new(open_sink(path)?),
        })
    }

    /// Opens the file again (USR1, after log rotation).
    pub(crate) fn reopen(&self) -> io::Result<()> {
        let sink = open_sink(&self.path)?;
        *self.sink.lock() = sink;
        Ok(())
    }

    pub(crate) fn write(&self, e: &Entry<'_>) {
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            self.format.render(e, &mut line);
            let mut sink = self.sink.lock();
            let _ = sink.write_all(line.as_bytes());
            let _ = sink.flush();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: &str, headers: &[(&str, &str)]) -> Parts {
        let (method, uri) = req.split_once(' ').unwrap_or(("GET", "/"));
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| http::Request::new(()).into_parts().0)
    }

    #[test]
    fn atoms_render() {
        let h = head(
            "GET /a/b?x=1",
            &[
                ("user-agent", "curl/8"),
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("x-id", "42"),
            ],
        );
        let e = Entry {
            head: Some(&h),
            peer: "127.0.0.1:5555".parse().ok(),
            status: 200,
            sent: 13,
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_561_911),
            elapsed: Duration::from_micros(1500),
        };
        let cases: &[(&str, &str)] = &[
            (DEFAULT_FORMAT, "127.0.0.1 - user [24/Nov/2026:23:11:51 +0000] \"GET /a/b?x=1 HTTP/1.1\" 200 13 \"-\" \"curl/8\"\n"),
            ("%(m)s %(U)s %(q)s %(H)s", "GET /a/b x=1 HTTP/1.1\n"),
            ("%(D)s %(M)s %(T)s %(L)s", "1500 1 0 0.001500\n"),
            ("%({X-Id}i)s %(zz)s 100%", "42 - 100%\n"),
            ("%(B)s/%(b)s", "13/13\n"),
        ];
        for (fmt, want) in cases {
            let mut out = String::new();
            Format::parse(fmt).render(&e, &mut out);
            assert_eq!(out, *want, "{fmt}");
        }
    }

    #[test]
    fn dash_for_empty_body() {
        let h = head("HEAD /", &[]);
        let e = Entry {
            head: Some(&h),
            peer: None,
            status: 204,
            sent: 0,
            received_at: SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
        };
        let mut out = String::new();
        Format::parse("%(h)s %(b)s %(B)s").render(&e, &mut out);
        assert_eq!(out, "- - 0\n");
    }

    #[test]
    fn no_head_renders_dashes() {
        let e = Entry {
            head: None,
            peer: "10.0.0.1:1".parse().ok(),
            status: 400,
            sent: 12,
            received_at: SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
        };
        let mut out = String::new();
        Format::parse(r#"%(h)s "%(r)s" %(s)s %(b)s %(a)s"#).render(&e, &mut out);
        assert_eq!(out, "10.0.0.1 \"-\" 400 12 -\n");
    }
}
