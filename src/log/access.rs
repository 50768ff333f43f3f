//! The access log: gunicorn's `--access-logformat` atoms, rendered per request.
//!
//! The format string is parsed once into pieces (`Format::parse`, pure and
//! unit-tested); each finished request renders its line into a reused
//! buffer and writes it in one call. Supported atoms: `h l u t r m U q H s
//! B b f a T M D L p`, `{header}i`, `{header}o` (response headers, kept
//! for the line only when the format names one) and `{VARIABLE}e` for the
//! environ variables derivable from the request head (`EnvVar`; the WSGI
//! environ itself is gone by the time the line is written); `%%` is `%`,
//! and Python's conversion specs (`%(h)-15s`, `%(D)08d`) apply (`Spec`).
//! Unknown atoms render as `-`; `Format::unknown` names them for the
//! startup warning.

use super::Civil;
use crate::forwarded::MountPoint;
use crate::wsgi::environ::{decode_path, latin1, path_info};
use http::request::Parts;
use http::HeaderMap;
use parking_lot::Mutex;
use std::fmt::Write as _;
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
    Bytes,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    /// `{name}i`, lowercased.
    Header(String),
    /// `{name}o`, lowercased: a response header.
    ResponseHeader(String),
    /// `{NAME}e`: an environ variable.
    Env(EnvVar),
    /// The atom as written, for the startup warning.
    Unknown(String),
}

/// The environ variables `{NAME}e` can name (case-insensitive, as in
/// gunicorn): those the request head and the peer determine. The others
/// (`SERVER_NAME`, `wsgi.url_scheme`, what middleware added) are unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvVar {
    RequestMethod,
    ScriptName,
    PathInfo,
    QueryString,
    RawUri,
    ServerProtocol,
    RemoteAddr,
    RemotePort,
    /// `CONTENT_TYPE`, `CONTENT_LENGTH` and `HTTP_*`: the request header,
    /// by its lowercase name.
    Header(String),
}

impl EnvVar {
    fn parse(name: &str) -> Option<EnvVar> {
        let upper = name.to_ascii_uppercase();
        Some(match upper.as_str() {
            "REQUEST_METHOD" => EnvVar::RequestMethod,
            "SCRIPT_NAME" => EnvVar::ScriptName,
            "PATH_INFO" => EnvVar::PathInfo,
            "QUERY_STRING" => EnvVar::QueryString,
            "RAW_URI" | "REQUEST_URI" => EnvVar::RawUri,
            "SERVER_PROTOCOL" => EnvVar::ServerProtocol,
            "REMOTE_ADDR" => EnvVar::RemoteAddr,
            "REMOTE_PORT" => EnvVar::RemotePort,
            "CONTENT_TYPE" => EnvVar::Header("content-type".into()),
            "CONTENT_LENGTH" => EnvVar::Header("content-length".into()),
            _ => {
                let rest = upper.strip_prefix("HTTP_").filter(|r| !r.is_empty())?;
                EnvVar::Header(rest.to_ascii_lowercase().replace('_', "-"))
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// An atom, and its conversion spec when it has more than the bare `s`.
    Atom(Atom, Option<Spec>),
}

/// Python's `%` conversion spec between `%(name)` and its type (`-15`,
/// `.20`, `08`), as gunicorn's `%` formatting applies it to a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Spec {
    /// `-`: pad on the right.
    left: bool,
    /// `0`, on a number (`d`): pad with zeros after the sign.
    zero: bool,
    /// `+` or ` `, on a number: the sign a positive one gets.
    sign: Option<char>,
    width: usize,
    /// On a string (`s`): at most this many characters.
    precision: Option<usize>,
    /// The type is `d`, `i` or `u`.
    number: bool,
}

impl Spec {
    /// `rest` after `%(name)`: the spec, and what follows its type; None
    /// when it is no conversion Siesta renders (the `%` then stays as written).
    fn parse(rest: &str) -> Option<(Option<Spec>, &str)> {
        if let Some(more) = rest.strip_prefix('s') {
            return Some((None, more)); // the common case: nothing to apply
        }
        let mut spec = Spec::default();
        let mut chars = rest.char_indices().peekable();
        while let Some(&(_, c)) = chars.peek() {
            match c {
                '-' => spec.left = true,
                '0' => spec.zero = true,
                '+' => spec.sign = Some('+'),
                ' ' => spec.sign = spec.sign.or(Some(' ')),
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let digits = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(&(_, c)) = chars.peek() {
                let Some(d) = c.to_digit(10) else { break };
                // Bounded: a width past a line's worth is a typo, not a layout.
                n = Some((n.unwrap_or(0) * 10 + d as usize).min(4096));
                chars.next();
            }
            n
        };
        spec.width = digits(&mut chars).unwrap_or(0);
        if chars.peek().is_some_and(|&(_, c)| c == '.') {
            chars.next();
            spec.precision = Some(digits(&mut chars).unwrap_or(0));
        }
        let (at, kind) = chars.next()?;
        spec.number = match kind {
            's' => false,
            'd' | 'i' | 'u' => true,
            _ => return None,
        };
        Some((Some(spec), &rest[at + kind.len_utf8()..]))
    }

    /// Applies the spec to the value written at `out[start..]`.
    fn apply(&self, out: &mut String, start: usize) {
        let value = out.split_off(start);
        let numeric = self.number && value.parse::<i64>().is_ok();
        let (sign, digits) = match (numeric, value.strip_prefix('-')) {
            (true, Some(abs)) => ("-".to_string(), abs),
            (true, None) => (self.sign.map(String::from).unwrap_or_default(), &value[..]),
            (false, _) => (String::new(), &value[..]),
        };
        let body: String = match (numeric, self.precision) {
            (false, Some(p)) => digits.chars().take(p).collect(),
            // On a number, Python's precision is the fewest digits.
            (true, Some(p)) if p > digits.len() => "0".repeat(p - digits.len()) + digits,
            _ => digits.to_string(),
        };
        let len = sign.chars().count() + body.chars().count();
        let pad = self.width.saturating_sub(len);
        if self.left {
            out.push_str(&sign);
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if self.zero && numeric {
            out.push_str(&sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(&body);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&sign);
            out.push_str(&body);
        }
    }
}

/// A parsed `--access-logformat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format {
    pieces: Vec<Piece>,
    /// `--root-path`, no trailing slash: `SCRIPT_NAME` and `PATH_INFO` split on it.
    root: String,
    /// Some `{name}o` atom: the response headers are kept for the line.
    response_headers: bool,
    /// `%(name)` with no conversion Siesta renders after it, kept as
    /// written (for the startup warning).
    unrendered: Vec<String>,
}

impl Format {
    /// Python's `%` formatting, as gunicorn applies it: `%(name)s` is an
    /// atom (with a spec too: `%(h)-15s`, `%(D)06d`), `%%` a `%`; any other
    /// `%` stays as written.
    pub(crate) fn parse(fmt: &str, root_path: &str) -> Format {
        let mut pieces = Vec::new();
        let mut unrendered = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        while let Some(start) = rest.find('%') {
            lit.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            if let Some(more) = after.strip_prefix('%') {
                lit.push('%');
                rest = more;
                continue;
            }
            let named = after.strip_prefix('(').and_then(|a| a.split_once(')'));
            let Some((name, spec, more)) =
                named.and_then(|(name, a)| Spec::parse(a).map(|(spec, more)| (name, spec, more)))
            else {
                if let Some((name, a)) = named {
                    // `%(h)x`, `%(h)-5z`, `%(h)` at the end: a typo, most
                    // likely. Quoted up to the character that is no spec.
                    let spec = a
                        .find(|c: char| !(c.is_ascii_digit() || "-+ #.".contains(c)))
                        .map_or(a.len(), |i| {
                            i + a[i..].chars().next().map_or(0, char::len_utf8)
                        });
                    unrendered.push(format!("%({name}){}", a[..spec].trim_end()));
                }
                lit.push('%');
                rest = after;
                continue;
            };
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Atom(atom(name), spec));
            rest = more;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        let response_headers = pieces
            .iter()
            .any(|p| matches!(p, Piece::Atom(Atom::ResponseHeader(_), _)));
        Format {
            pieces,
            root: root_path.trim_end_matches('/').to_string(),
            response_headers,
            unrendered,
        }
    }

    /// The atoms Siesta does not know, as written (`%(zz)s`), each once.
    pub(crate) fn unknown(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for piece in &self.pieces {
            if let Piece::Atom(Atom::Unknown(n), _) = piece {
                let written = format!("%({n})s");
                if !names.contains(&written) {
                    names.push(written);
                }
            }
        }
        names
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
        "B" => Atom::Bytes,
        "b" => Atom::Bytes,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        n if n.len() > 3 && n.starts_with('{') && n.ends_with("}i") => {
            Atom::Header(n[1..n.len() - 2].to_ascii_lowercase())
        }
        n if n.len() > 3 && n.starts_with('{') && n.ends_with("}o") => {
            Atom::ResponseHeader(n[1..n.len() - 2].to_ascii_lowercase())
        }
        n if n.starts_with('{') && n.ends_with("}e") => EnvVar::parse(&n[1..n.len() - 2])
            .map_or_else(|| Atom::Unknown(n.to_string()), Atom::Env),
        n => Atom::Unknown(n.to_string()),
    }
}

/// What one finished request contributes to its line.
pub(crate) struct Entry<'a> {
    /// `None` for a head hyper refused before it was parsed: its atoms are `-`.
    pub head: Option<&'a Parts>,
    pub peer: Option<SocketAddr>,
    pub status: u16,
    pub sent: u64,
    /// When the line is written (the request's end): `%(t)s`, as
    /// gunicorn stamps it, so lines come in the order of their stamps.
    pub at: SystemTime,
    pub elapsed: Duration,
    /// The response's headers, when the format names one (`{name}o`).
    pub response: Option<&'a HeaderMap>,
    /// The server refused the request's head (`RequestError::for_head`):
    /// its target or a field may be tens of kilobytes (a 414, a 431), so
    /// each atom is cut to `log::LOGGED_TARGET` bytes, with its length
    /// noted (`%(r)s`'s method and target apart), as in the refusal's
    /// error-log line.
    pub refused: bool,
}

fn protocol(head: &Parts) -> &'static str {
    match head.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

fn header<'a>(head: &'a Parts, name: &str) -> std::borrow::Cow<'a, str> {
    find(&head.headers, name)
}

/// A header's value as gunicorn logs it: the last of a repeated one, its
/// bytes read as latin-1 (obs-text too, which `to_str` refuses).
fn find<'a>(headers: &'a HeaderMap, name: &str) -> std::borrow::Cow<'a, str> {
    match headers.get_all(name).iter().next_back() {
        None => "-".into(),
        Some(v) => match v.to_str() {
            Ok(text) => text.into(),
            Err(_) => v.as_bytes().iter().map(|&b| char::from(b)).collect(),
        },
    }
}

/// A header's values as the environ has them (`%({HTTP_X}e)s`): all of a
/// repeated one, joined with `,` (`; ` for `Cookie`), read as latin-1.
fn joined<'a>(head: &'a Parts, name: &str) -> std::borrow::Cow<'a, str> {
    let mut values = head.headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return "-".into();
    };
    let latin1 = |v: &http::HeaderValue, out: &mut String| {
        out.extend(v.as_bytes().iter().map(|&b| char::from(b)));
    };
    let mut rest = values.peekable();
    if rest.peek().is_none() {
        return find(&head.headers, name);
    }
    let sep = if name == "cookie" { "; " } else { "," };
    let mut out = String::new();
    latin1(first, &mut out);
    for v in rest {
        out.push_str(sep);
        latin1(v, &mut out);
    }
    out.into()
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
    /// Whether a request's response headers are needed for its line.
    pub(crate) fn wants_response_headers(&self) -> bool {
        self.response_headers
    }

    /// The request's mount point: a trusted proxy's `SCRIPT_NAME`, else `--root-path`.
    fn mount<'h>(&'h self, h: &'h Parts) -> &'h [u8] {
        match h.extensions.get::<MountPoint>() {
            Some(MountPoint(mount)) => mount,
            None => self.root.as_bytes(),
        }
    }

    /// An environ variable, as the app saw it in its environ.
    fn env(&self, var: &EnvVar, e: &Entry<'_>, h: &Parts, out: &mut String) -> std::fmt::Result {
        match var {
            EnvVar::RequestMethod => write!(out, "{}", h.method),
            // The mount point, read as latin-1, whether the path is under it
            // or not (`wsgi/environ.rs`'s template).
            EnvVar::ScriptName => write!(out, "{}", latin1(self.mount(h))),
            EnvVar::PathInfo => {
                let decoded = decode_path(h.uri.path());
                write!(out, "{}", latin1(path_info(self.mount(h), &decoded)))
            }
            EnvVar::QueryString => write!(out, "{}", h.uri.query().unwrap_or("")),
            EnvVar::RawUri => write!(out, "{}", crate::wsgi::environ::raw_uri(h)),
            EnvVar::ServerProtocol => match h.version {
                http::Version::HTTP_10 => write!(out, "HTTP/1.0"),
                _ => write!(out, "HTTP/1.1"),
            },
            EnvVar::RemoteAddr => match e.peer {
                Some(p) => write!(out, "{}", p.ip()),
                None => write!(out, "-"),
            },
            EnvVar::RemotePort => match e.peer {
                Some(p) => write!(out, "{}", p.port()),
                None => write!(out, "-"),
            },
            // As in the environ: an absolute-form target's authority is `HTTP_HOST`.
            EnvVar::Header(name) => match crate::wsgi::environ::target_host(&h.uri) {
                Some(host) if name == "host" => write!(out, "{host}"),
                _ => write!(out, "{}", joined(h, name)),
            },
        }
    }

    pub(crate) fn render(&self, e: &Entry<'_>, out: &mut String) {
        for piece in &self.pieces {
            let (a, spec) = match piece {
                Piece::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Piece::Atom(a, spec) => (a, spec),
            };
            let start = out.len();
            let _ = match (a, e.head) {
                (Atom::RemoteAddr, _) => match e.peer {
                    Some(p) => write!(out, "{}", p.ip()),
                    None => write!(out, "-"),
                },
                (Atom::Dash | Atom::Unknown(_), _) => write!(out, "-"),
                (Atom::ResponseHeader(name), _) => match e.response {
                    Some(r) => write!(out, "{}", find(r, name)),
                    None => write!(out, "-"),
                },
                (Atom::Time, _) => {
                    write!(out, "[{}]", Civil::from_system(e.at).clf_stamp())
                }
                (Atom::Status, _) => write!(out, "{}", e.status),
                // gunicorn documents `%(b)s` as `-` for no body, but logs
                // `0` (`str(resp.sent)` is never empty); logs are parsed as
                // gunicorn writes them.
                (Atom::Bytes, _) => write!(out, "{}", e.sent),
                (Atom::Seconds, _) => write!(out, "{}", e.elapsed.as_secs()),
                (Atom::Millis, _) => write!(out, "{}", e.elapsed.as_millis()),
                (Atom::Micros, _) => write!(out, "{}", e.elapsed.as_micros()),
                // From the same microseconds as `%(D)s`, so the two agree.
                (Atom::DecimalSeconds, _) => {
                    let us = e.elapsed.as_micros();
                    write!(out, "{}.{:06}", us / 1_000_000, us % 1_000_000)
                }
                (Atom::Pid, _) => write!(out, "<{}>", std::process::id()),
                // The rest describe the request head; hyper may have refused it unparsed.
                (_, None) => write!(out, "-"),
                (Atom::User, Some(h)) => write!(out, "{}", basic_user(h).as_deref().unwrap_or("-")),
                (Atom::RequestLine, Some(h)) => {
                    // The target as `RAW_URI` has it: an absolute-form one whole.
                    let target = crate::wsgi::environ::raw_uri(h);
                    let target = target.as_ref();
                    if e.refused {
                        // Method and target cut apart: the line keeps its
                        // three space-separated fields for log parsers.
                        let method = super::shortened(h.method.as_str());
                        let target = super::shortened(target);
                        write!(out, "{method} {target} {}", protocol(h))
                    } else {
                        write!(out, "{} {} {}", h.method, target, protocol(h))
                    }
                }
                (Atom::Method, Some(h)) => write!(out, "{}", h.method),
                // `PATH_INFO`, as gunicorn logs it: decoded, under the mount point.
                (Atom::Path, Some(h)) => self.env(&EnvVar::PathInfo, e, h, out),
                (Atom::Query, Some(h)) => write!(out, "{}", h.uri.query().unwrap_or("")),
                (Atom::Protocol, Some(h)) => write!(out, "{}", protocol(h)),
                (Atom::Referer, Some(h)) => write!(out, "{}", header(h, "referer")),
                (Atom::UserAgent, Some(h)) => write!(out, "{}", header(h, "user-agent")),
                (Atom::Header(name), Some(h)) => write!(out, "{}", header(h, name)),
                (Atom::Env(var), Some(h)) => self.env(var, e, h, out),
            };
            // Cut before it is escaped, so that no escape is cut in two.
            if e.refused
                && !matches!(a, Atom::RequestLine)
                && out.len() - start > super::LOGGED_TARGET
            {
                let value = out.split_off(start);
                out.push_str(&super::shortened(&value));
            }
            // As gunicorn: a `"` the client put in a value is `\"`, so it
            // cannot close a quoted field and forge the ones after it; a
            // control character (a decoded `%0A` in a path, NEL read as
            // latin-1) is `\xHH`, so it cannot end the line either.
            if out[start..].contains(|c: char| c == '"' || breaks_line(c)) {
                let value = out.split_off(start);
                for c in value.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        c if breaks_line(c) => {
                            let _ = write!(out, "\\x{:02x}", u32::from(c));
                        }
                        c => out.push(c),
                    }
                }
            }
            if let Some(spec) = spec {
                spec.apply(out, start);
            }
        }
        out.push('\n');
    }
}

/// A character a log reader may take for a line's end, or that no line
/// should hold raw: C0 controls but tab, DEL, and NEL (U+0085, which
/// Python's `splitlines` breaks at). Other C1 code points stay: they are
/// the continuation bytes of UTF-8 read as latin-1, and re-encoding the
/// line gives the text back, as from gunicorn's log.
fn breaks_line(c: char) -> bool {
    (c < ' ' && c != '\t') || c == '\u{7f}' || c == '\u{85}'
}

/// One warning line per atom of `format` that Siesta does not know (it
/// renders as `-`): the master calls this once, at startup and on HUP.
pub(crate) fn warn_unknown(format: &str) {
    let parsed = Format::parse(format, "");
    for name in parsed.unknown() {
        super::error::write(
            super::error::Level::Warning,
            &format!("--access-logformat: unknown atom {name}, logged as -"),
        );
    }
    for written in &parsed.unrendered {
        super::error::write(
            super::error::Level::Warning,
            &format!(
                "--access-logformat: {written} has no conversion Siesta renders (s, d, i or u, \
                 after flags, a width and a precision), logged as written"
            ),
        );
    }
}

/// `--access-logfile`: where lines go, and in which format.
pub(crate) struct AccessLog {
    format: Format,
    path: String,
    sink: Mutex<Box<dyn Write + Send>>,
    /// Lines that could not be written (a full disk, a reader gone) are
    /// told in the error log, once per period.
    failures: Mutex<crate::log::spaced::Spaced>,
}

fn open_file(path: &str) -> io::Result<std::fs::File> {
    super::open_append(path)
}

fn open_sink(path: &str) -> io::Result<Box<dyn Write + Send>> {
    Ok(if path == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(open_file(path)?)
    })
}

/// The access log a worker opened before it switched user (`-u`/`-g`),
/// by its path: the first `AccessLog::open` of that path takes it.
static PREOPENED: Mutex<Option<(String, std::fs::File)>> = Mutex::new(None);

/// Opens `path` now, while the worker may (before `-u`/`-g` take effect):
/// a directory only root may enter stays writable through it, as the files
/// a gunicorn worker inherits do. A failure is left for `AccessLog::open`
/// to report.
#[pyo3::pyfunction]
pub(crate) fn preopen_access_log(path: &str) {
    if path != "-" {
        if let Ok(f) = open_file(path) {
            *PREOPENED.lock() = Some((path.to_string(), f));
        }
    }
}

impl AccessLog {
    /// `-` is stdout; anything else a file opened for appending.
    pub(crate) fn open(path: &str, format: &str, root_path: &str) -> io::Result<AccessLog> {
        let preopened = PREOPENED.lock().take().filter(|(p, _)| p == path);
        let sink: Box<dyn Write + Send> = match preopened {
            Some((_, f)) => Box::new(f),
            None => open_sink(path)?,
        };
        Ok(AccessLog {
            format: Format::parse(format, root_path),
            path: path.to_string(),
            sink: Mutex::new(sink),
            failures: Mutex::default(),
        })
    }

    /// Whether each request must keep its response headers for its line.
    pub(crate) fn wants_response_headers(&self) -> bool {
        self.format.wants_response_headers()
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
            let written = sink.write_all(line.as_bytes()).and_then(|()| sink.flush());
            drop(sink);
            if let Err(e) = written {
                let to = if self.path == "-" {
                    "stdout"
                } else {
                    &self.path
                };
                self.failures
                    .lock()
                    .error(&format!("Cannot write the access log to {to}: {e}"));
            }
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
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_561_911),
            elapsed: Duration::from_micros(1500),
            response: None,
            refused: false,
        };
        // The stamp is in local time, whatever TZ the tests run under
        // (`Civil`'s own tests pin the rendering at fixed offsets).
        let default_line = format!(
            "127.0.0.1 - user [{}] \"GET /a/b?x=1 HTTP/1.1\" 200 13 \"-\" \"curl/8\"\n",
            Civil::from_system(e.at).clf_stamp()
        );
        let cases: &[(&str, &str)] = &[
            (DEFAULT_FORMAT, &default_line),
            ("%(m)s %(U)s %(q)s %(H)s", "GET /a/b x=1 HTTP/1.1\n"),
            ("%(D)s %(M)s %(T)s %(L)s", "1500 1 0 0.001500\n"),
            ("%({X-Id}i)s %(zz)s 100%", "42 - 100%\n"),
            ("%(B)s/%(b)s", "13/13\n"),
            // Python's conversion specs, as gunicorn's `%` applies them.
            ("[%(h)-12s] [%(m)5s]", "[127.0.0.1   ] [  GET]\n"),
            (
                "%(a).4s|%(D)08d|%(s)+d|%(B)-5d|",
                "curl|00001500|+200|13   |\n",
            ),
            ("%(D)d %(T)i %(M)u %(zz)5s", "1500 0 1     -\n"),
            ("%(D).6d|%(D)8.6d|%(B)-4.3d|", "001500|  001500|013 |\n"),
            // Not a conversion Siesta renders: left as written.
            ("%(h)x %(h) %(h)", "%(h)x %(h) %(h)\n"),
        ];
        for (fmt, want) in cases {
            let mut out = String::new();
            Format::parse(fmt, "").render(&e, &mut out);
            assert_eq!(out, *want, "{fmt}");
        }
    }

    #[test]
    fn client_values_cannot_forge_fields() {
        let mut h = head(
            "GET /a%0Ab",
            &[("referer", "x\" 200 1 \"y"), ("x-rep", "a")],
        );
        h.headers.insert(
            "x-c1",
            http::HeaderValue::from_bytes(b"n\x85l\xe2\x82\xac\tt")
                .unwrap_or(http::HeaderValue::from_static("?")),
        );
        h.headers
            .append("x-rep", http::HeaderValue::from_static("b"));
        h.headers.insert(
            "user-agent",
            http::HeaderValue::from_bytes(b"lat\xe9")
                .unwrap_or(http::HeaderValue::from_static("?")),
        );
        let e = Entry {
            head: Some(&h),
            peer: None,
            status: 200,
            sent: 1,
            at: SystemTime::UNIX_EPOCH,
            elapsed: Duration::from_micros(81_999_999),
            response: None,
            refused: false,
        };
        let mut out = String::new();
        let fmt = r#""%(f)s" "%(a)s" %({x-rep}i)s %(D)s %(L)s %({PATH_INFO}e)s %({x-c1}i)s"#;
        Format::parse(fmt, "").render(&e, &mut out);
        // A quote is escaped as gunicorn does; obs-text reads as latin-1; the
        // last of a repeated field; %(L)s from the same microseconds as %(D)s;
        // a decoded newline and NEL are escaped, so one line stays one; a
        // tab and UTF-8 read as latin-1 (the euro sign) stay as they are.
        assert_eq!(
            out,
            "\"x\\\" 200 1 \\\"y\" \"lat\u{e9}\" b 81999999 81.999999 /a\\x0ab n\\x85l\u{e2}\u{82}\u{ac}\tt\n"
        );
    }

    #[test]
    /// `%(b)s` is `0` for no body, as gunicorn logs it (its docs say `-`).
    fn zero_for_empty_body() {
        let h = head("HEAD /", &[]);
        let e = Entry {
            head: Some(&h),
            peer: None,
            status: 204,
            sent: 0,
            at: SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
            response: None,
            refused: false,
        };
        let mut out = String::new();
        Format::parse("%(h)s %(b)s %(B)s", "").render(&e, &mut out);
        assert_eq!(out, "- 0 0\n");
    }

    #[test]
    fn no_head_renders_dashes() {
        let e = Entry {
            head: None,
            peer: "10.0.0.1:1".parse().ok(),
            status: 400,
            sent: 12,
            at: SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
            response: None,
            refused: false,
        };
        let mut out = String::new();
        Format::parse(r#"%(h)s "%(r)s" %(s)s %(b)s %(a)s"#, "").render(&e, &mut out);
        assert_eq!(out, "10.0.0.1 \"-\" 400 12 -\n");
    }

    #[test]
    fn response_headers_environ_and_percent() {
        let h = head(
            "GET /app/a%20b?x=1",
            &[("content-type", "text/csv"), ("x-forwarded-for", "1.2.3.4")],
        );
        let mut out_headers = HeaderMap::new();
        out_headers.insert("x-out", http::HeaderValue::from_static("yes"));
        let e = Entry {
            head: Some(&h),
            peer: "127.0.0.1:5555".parse().ok(),
            status: 200,
            sent: 0,
            at: SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
            response: Some(&out_headers),
            refused: false,
        };
        let cases: &[(&str, &str)] = &[
            ("%({X-Out}o)s %({x-none}o)s", "yes -"),
            ("%({PATH_INFO}e)s|%({script_name}e)s", "/a b|/app"),
            ("%({REQUEST_METHOD}e)s %({QUERY_STRING}e)s", "GET x=1"),
            (
                "%({SERVER_PROTOCOL}e)s %({RAW_URI}e)s",
                "HTTP/1.1 /app/a%20b?x=1",
            ),
            ("%({REMOTE_ADDR}e)s:%({REMOTE_PORT}e)s", "127.0.0.1:5555"),
            (
                "%({CONTENT_TYPE}e)s %({HTTP_X_FORWARDED_FOR}e)s",
                "text/csv 1.2.3.4",
            ),
            ("%({CONTENT_LENGTH}e)s %({SERVER_NAME}e)s", "- -"),
            ("100%% %%(h)s 5% %(", "100% %(h)s 5% %("),
        ];
        for (fmt, want) in cases {
            let mut out = String::new();
            Format::parse(fmt, "/app/").render(&e, &mut out);
            assert_eq!(out, format!("{want}\n"), "{fmt}");
        }
        let mut out = String::new();
        Format::parse("%({x-out}o)s", "").render(
            &Entry {
                response: None,
                ..e
            },
            &mut out,
        );
        assert_eq!(out, "-\n", "no response headers kept");
        // An absolute-form target names the host, as in the environ; no peer is `-`.
        let abs = head("GET http://t.example:81/x", &[("host", "h.example")]);
        let mut out = String::new();
        Format::parse("%({HTTP_HOST}e)s %({REMOTE_ADDR}e)s %({host}i)s", "").render(
            &Entry {
                head: Some(&abs),
                peer: None,
                ..e
            },
            &mut out,
        );
        assert_eq!(out, "t.example:81 - h.example\n");
        // A refused target's userinfo never reaches the log.
        let userinfo = head("GET http://u:secret@t.example/x", &[("host", "h.example")]);
        let mut out = String::new();
        Format::parse("%({HTTP_HOST}e)s", "").render(
            &Entry {
                head: Some(&userinfo),
                ..e
            },
            &mut out,
        );
        assert_eq!(out, "h.example\n");
        // A refused request's atoms are cut: a 414's target or a 431's
        // field could otherwise put tens of kilobytes in each line.
        let long = format!("GET /{}", "a".repeat(60_000));
        let huge = head(
            &long,
            &[("host", "h.example"), ("user-agent", &"u".repeat(9000))],
        );
        let refused = Entry {
            head: Some(&huge),
            refused: true,
            ..e
        };
        let mut out = String::new();
        Format::parse(DEFAULT_FORMAT, "").render(&refused, &mut out);
        assert!(out.len() < 800, "{} bytes", out.len());
        assert!(out.contains("...[60001B] HTTP/1.1\" "), "{out}");
        assert!(out.contains("...[9000B]\"\n"), "{out}");
        // Cut before escaping: no escape is cut in two, and the length is
        // the value's own.
        let quotes = "\"".repeat(300);
        let quoted = head("GET /q", &[("host", "h.example"), ("user-agent", &quotes)]);
        let mut out = String::new();
        Format::parse("%(a)s", "").render(
            &Entry {
                head: Some(&quoted),
                ..refused
            },
            &mut out,
        );
        assert_eq!(out, format!("{}...[300B]\n", "\\\"".repeat(256)));
        let mut out = String::new();
        Format::parse(DEFAULT_FORMAT, "").render(
            &Entry {
                refused: false,
                ..refused
            },
            &mut out,
        );
        assert!(out.len() > 69_000, "a request served is logged whole");
    }

    #[test]
    fn unknown_atoms_are_named_once() {
        let cases: &[(&str, &[&str], bool)] = &[
            (DEFAULT_FORMAT, &[], false),
            (
                "%(zz)s %(zz)s %({SERVER_NAME}e)s",
                &["%(zz)s", "%({SERVER_NAME}e)s"],
                false,
            ),
            ("%({x}o)s %({PATH_INFO}e)s %({a}i)s %%(zz)s", &[], true),
        ];
        for (fmt, want, response) in cases {
            let f = Format::parse(fmt, "");
            assert_eq!(f.unknown(), want.to_vec(), "{fmt}");
            assert_eq!(f.wants_response_headers(), *response, "{fmt}");
        }
        let f = Format::parse("%(h)S %(a)s %(m) %(zz)s %(u)-5z %(m)", "");
        assert_eq!(f.unrendered, ["%(h)S", "%(m) %", "%(u)-5z", "%(m)"]);
    }
}
