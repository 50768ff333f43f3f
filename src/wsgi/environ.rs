//! The WSGI environ: what a request looks like to the app (PEP 3333).
//!
//! The pure half turns a request head into environ strings (percent-decoding
//! `PATH_INFO` as latin-1, `SCRIPT_NAME` from the root path, `HTTP_*` names,
//! `SERVER_NAME`/`SERVER_PORT` from the listener, or from `Host` on a unix
//! socket) and is unit-tested without Python. The Python half fills a dict,
//! reusing keys and constant values made once per worker (`EnvConstants`).
//! It does not own the body object (`input.rs`) or decide anything about the
//! response.

use crate::exchange::ConnInfo;
use crate::forwarded::{MountPoint, Scheme};
use http::request::Parts;
use http::{HeaderName, Version};
use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};
use std::collections::HashMap;
use std::hash::Hasher;

/// Percent-decodes a request path into raw bytes (later read as latin-1);
/// a path with nothing escaped is borrowed as it is.
pub(crate) fn decode_path(path: &str) -> std::borrow::Cow<'_, [u8]> {
    percent_encoding::percent_decode_str(path).into()
}

/// Bytes as a latin-1 string: every byte is the code point of the same value.
pub(crate) fn latin1(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
    }
}

/// Bytes as a latin-1 Python `str`, made by CPython's own latin-1 decoder
/// in one pass: none of the UTF-8 check and decoding a Rust `&str` costs on
/// its way in (`latin1` then `PyString::new`).
pub(crate) fn py_latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too long"))?;
    // SAFETY: the pointer and length describe `bytes`, alive for the call;
    // the decoder copies them and returns a new reference to a `str`, or
    // NULL with an exception set (which `from_owned_ptr_or_err` takes).
    unsafe {
        let s = pyo3::ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, s)?.cast_into_unchecked())
    }
}

/// `PATH_INFO` of a decoded path, given the mount point from `--root-path`
/// (no trailing slash; empty when not mounted): the path past the mount
/// point when it is under it, else all of it. (`SCRIPT_NAME` is the mount
/// point either way.)
pub(crate) fn path_info<'a>(r: &[u8], path: &'a [u8]) -> &'a [u8] {
    if !r.is_empty() && path.starts_with(r) && (path.len() == r.len() || path[r.len()] == b'/') {
        &path[r.len()..]
    } else {
        path
    }
}

/// `Content-Type` → `HTTP_CONTENT_TYPE`? No: PEP 3333 names two headers
/// without the prefix. Returns `None` for names WSGI cannot carry safely
/// (an underscore would let `X_Forwarded` pose as `X-Forwarded`).
pub(crate) fn header_env_name(name: &str) -> Option<String> {
    if name.contains('_') {
        return None;
    }
    match name {
        "content-type" => Some("CONTENT_TYPE".into()),
        "content-length" => Some("CONTENT_LENGTH".into()),
        _ => {
            let mut out = String::with_capacity(5 + name.len());
            out.push_str("HTTP_");
            out.extend(name.chars().map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            }));
            Some(out)
        }
    }
}

/// `SERVER_NAME` and `SERVER_PORT` from a `Host` header value.
pub(crate) fn split_host<'a>(host: &'a str, default_port: &'a str) -> (&'a str, &'a str) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = match rest[end + 1..].strip_prefix(':') {
                Some(port) if !port.is_empty() => port,
                _ => default_port,
            };
            return (&host[..end + 2], port);
        }
        return (host, default_port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        // An empty port is the scheme's (RFC 3986 §3.2.3).
        Some((h, "")) => (h, default_port),
        _ => (host, default_port),
    }
}

/// The request-target exactly as the client sent it (origin, absolute or,
/// for a refused `CONNECT`, authority form).
pub(crate) fn raw_uri(head: &Parts) -> std::borrow::Cow<'_, str> {
    if head.uri.scheme().is_some() || head.uri.path_and_query().is_none() {
        std::borrow::Cow::Owned(head.uri.to_string())
    } else {
        std::borrow::Cow::Borrowed(
            head.uri
                .path_and_query()
                .map_or_else(|| head.uri.path(), |pq| pq.as_str()),
        )
    }
}

/// Values made once per worker and shared by every environ.
pub(crate) struct EnvConstants {
    pub default_port: String,
    pub root_path: String,
    /// `HTTP_*` keys for header names seen before (bounded, see `header_key`).
    header_keys: Mutex<HashMap<HeaderName, Py<PyString>, FnvState>>,
    /// Every environ starts as a copy of this: the constant entries set, the
    /// per-request keys present (as `None`) so filling them never grows the
    /// dict.
    template: Py<PyDict>,
}

impl EnvConstants {
    pub(crate) fn new(
        py: Python<'_>,
        url_scheme: &str,
        multiprocess: bool,
        errors: Py<PyAny>,
        file_wrapper: Py<PyAny>,
        root_path: &str,
    ) -> PyResult<Self> {
        let root = root_path.trim_end_matches('/');
        let template = PyDict::new(py);
        for key in PER_REQUEST {
            template.set_item(PyString::intern(py, key), py.None())?;
        }
        // The usual values, which `build` then leaves as they are. The
        // mount point is SCRIPT_NAME whether the path is under it or not,
        // as the bytes a request's path matches it by, read as latin-1.
        template.set_item(intern!(py, "SCRIPT_NAME"), latin1(root.as_bytes()).as_ref())?;
        template.set_item(intern!(py, "QUERY_STRING"), intern!(py, ""))?;
        template.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.1"))?;
        template.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
        template.set_item(
            intern!(py, "wsgi.url_scheme"),
            PyString::intern(py, url_scheme),
        )?;
        template.set_item(intern!(py, "wsgi.errors"), errors.bind(py))?;
        // Both modes may call the app again before a call returns: a pool
        // thread each, or greenlets, which a monkey-patched app sees as
        // threads (`threading.local` is per greenlet).
        template.set_item(intern!(py, "wsgi.multithread"), PyBool::new(py, true))?;
        template.set_item(
            intern!(py, "wsgi.multiprocess"),
            PyBool::new(py, multiprocess),
        )?;
        template.set_item(intern!(py, "wsgi.run_once"), PyBool::new(py, false))?;
        template.set_item(intern!(py, "wsgi.input_terminated"), PyBool::new(py, true))?;
        template.set_item(intern!(py, "wsgi.file_wrapper"), file_wrapper.bind(py))?;
        template.set_item(
            intern!(py, "SERVER_SOFTWARE"),
            PyString::new(py, concat!("siesta/", env!("CARGO_PKG_VERSION"))),
        )?;
        Ok(EnvConstants {
            template: with_room(py, template)?.unbind(),
            default_port: if url_scheme == "https" { "443" } else { "80" }.into(),
            root_path: root.to_string(),
            header_keys: Mutex::new(HashMap::with_hasher(FnvState::new())),
        })
    }

    /// The environ key for a header, cached for the first 256 distinct names
    /// so a client inventing names cannot grow the cache.
    fn header_key<'py>(&self, py: Python<'py>, name: &HeaderName) -> Option<Bound<'py, PyString>> {
        let mut keys = self.header_keys.lock();
        if let Some(k) = keys.get(name) {
            return Some(k.bind(py).clone());
        }
        let key = PyString::intern(py, &header_env_name(name.as_str())?);
        if keys.len() < 256 {
            keys.insert(name.clone(), key.clone().unbind());
        }
        Some(key)
    }
}

/// FNV-1a, for `header_keys`: a header name hashes in a few instructions
/// (a standard one is a small number), where the default `SipHash` took
/// about 200 per lookup. Its state starts from a per-process random seed:
/// with FNV's fixed basis, names that collide can be found offline in
/// seconds, and 256 of them in the cache (its bound) made each lookup of
/// such a name about 70 times slower (review).
struct Fnv(u64);

#[derive(Clone)]
struct FnvState {
    seed: u64,
}

impl FnvState {
    fn new() -> Self {
        use std::hash::BuildHasher;
        // std's `RandomState` is seeded from the OS once per process.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        FnvState {
            seed: 0xcbf2_9ce4_8422_2325 ^ seed,
        }
    }
}

impl std::hash::BuildHasher for FnvState {
    type Hasher = Fnv;

    fn build_hasher(&self) -> Fnv {
        Fnv(self.seed)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// `template` in a table with room for a request's `HTTP_*` keys. CPython
/// copies a dict by cloning its table, size and all, and the 21 entries of
/// the template fill a 32-slot table exactly, so every environ grew (a new
/// table, every key hashed in again) at its first header. `update` into a
/// dict that already has an entry sizes the table for both at once: the
/// same entries, in the same order, in a 64-slot table with no deleted
/// slot (a deleted one would be cloned into every environ, and an app's
/// `dict(environ)` copies quickly only a table without one). When a copy
/// does not come out larger (another CPython), the template stays as built.
fn with_room<'py>(py: Python<'py>, template: Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let getsizeof = py.import("sys")?.getattr("getsizeof")?;
    let size = |d: &Bound<'py, PyDict>| -> PyResult<usize> { getsizeof.call1((d,))?.extract() };
    let Some((key, value)) = template.iter().next() else {
        return Ok(template);
    };
    let grown = PyDict::new(py);
    grown.set_item(key, value)?;
    grown.update(template.as_mapping())?;
    if size(&grown.copy()?)? > size(&template)? {
        Ok(grown)
    } else {
        Ok(template)
    }
}

/// Keys every request sets; the template holds them so a copy has room.
const PER_REQUEST: [&str; 12] = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_NAME",
    "SERVER_PORT",
    "wsgi.input",
];

/// Fills a new environ dict for one request.
pub(crate) fn build<'py>(
    py: Python<'py>,
    k: &EnvConstants,
    head: &Parts,
    conn: &ConnInfo,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = k.template.bind(py).copy()?;
    env.set_item(
        intern!(py, "REQUEST_METHOD"),
        method_str(py, head.method.as_str()),
    )?;
    let decoded = decode_path(head.uri.path());
    // The template holds the root path as SCRIPT_NAME (what `path_info`
    // takes off is those bytes), an empty QUERY_STRING and HTTP/1.1: only
    // other values are set.
    // A trusted proxy's `SCRIPT_NAME` header (`forwarded::MountPoint`)
    // mounts this request elsewhere than `--root-path`.
    let path = match head.extensions.get::<MountPoint>() {
        Some(MountPoint(mount)) => {
            env.set_item(intern!(py, "SCRIPT_NAME"), py_latin1(py, mount)?)?;
            path_info(mount, &decoded)
        }
        None => path_info(k.root_path.as_bytes(), &decoded),
    };
    env.set_item(intern!(py, "PATH_INFO"), py_latin1(py, path)?)?;
    // Raw bytes past ASCII in the target (hyper takes them when they are
    // UTF-8) are latin-1 here too, as PEP 3333 wants of every native string.
    if let Some(q) = head.uri.query() {
        env.set_item(intern!(py, "QUERY_STRING"), py_latin1(py, q.as_bytes())?)?;
    }
    let raw = py_latin1(py, raw_uri(head).as_bytes())?;
    env.set_item(intern!(py, "RAW_URI"), &raw)?;
    env.set_item(intern!(py, "REQUEST_URI"), raw)?;
    if head.version == Version::HTTP_10 {
        env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.0"))?;
    }
    let (addr, port) = conn.remote(py);
    env.set_item(intern!(py, "REMOTE_ADDR"), addr)?;
    if conn.remote_addr().is_some() {
        env.set_item(intern!(py, "REMOTE_PORT"), port)?;
    } else {
        env.del_item(intern!(py, "REMOTE_PORT"))?;
    }
    // An absolute-form target names the host, and `Host` is then ignored
    // (RFC 9112 §3.2.2): `HTTP_HOST` is the target's authority.
    let target_host = target_host(&head.uri);
    // A trusted proxy said HTTPS (`server/proxy.rs`): the scheme, and the
    // port a `Host` without one implies.
    let https = head.extensions.get::<Scheme>() == Some(&Scheme::Https);
    if https {
        env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
    }
    let default_port = if https { "443" } else { &k.default_port };
    // The listening socket names the server, as in gunicorn and waitress;
    // only a unix socket, which has no name a URL could use, takes `Host`
    // (looked up only then).
    let host = || {
        target_host.or_else(|| {
            head.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
    };
    match conn.peer.is_none().then(host).flatten() {
        Some(h) if !h.is_empty() => {
            let (name, port) = split_host(h, default_port);
            env.set_item(intern!(py, "SERVER_NAME"), name)?;
            env.set_item(intern!(py, "SERVER_PORT"), port)?;
        }
        _ => {
            let (name, port) = conn.server.py(py);
            env.set_item(intern!(py, "SERVER_NAME"), name)?;
            if https && conn.peer.is_none() {
                // A unix socket's listener has no port: the scheme's.
                env.set_item(intern!(py, "SERVER_PORT"), intern!(py, "443"))?;
            } else {
                env.set_item(intern!(py, "SERVER_PORT"), port)?;
            }
        }
    }

    // With no name repeated (most heads), each pair is a whole field: no
    // lookup per name.
    if head.headers.len() == head.headers.keys_len() {
        for (name, value) in &head.headers {
            if let Some(key) = k.header_key(py, name) {
                env.set_item(key, py_latin1(py, value.as_bytes())?)?;
            }
        }
    } else {
        for name in head.headers.keys() {
            if let Some(key) = k.header_key(py, name) {
                let joined = joined(name, head.headers.get_all(name));
                env.set_item(key, py_latin1(py, &joined)?)?;
            }
        }
    }
    if let Some(h) = target_host {
        env.set_item(intern!(py, "HTTP_HOST"), h)?;
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;
    Ok(env)
}

/// A field's values joined into one: `,` between them (RFC 9110 §5.3),
/// `; ` between `Cookie` values (RFC 6265 §5.4).
fn joined(name: &http::HeaderName, values: http::header::GetAll<'_, http::HeaderValue>) -> Vec<u8> {
    let sep: &[u8] = if name == http::header::COOKIE {
        b"; "
    } else {
        b","
    };
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// The host and port of an absolute-form target that is a valid `Host`
/// (`check_head` refuses the others; the access log may still see them, and
/// falls back to the `Host` field); `None` for every other form.
pub(crate) fn target_host(uri: &http::Uri) -> Option<&str> {
    uri.scheme()?;
    Some(uri.authority()?.as_str())
        .filter(|h| !h.is_empty() && crate::server::head::valid_host(h.as_bytes()))
}

/// Common methods as interned strings; others made per request.
fn method_str<'py>(py: Python<'py>, m: &str) -> Bound<'py, PyAny> {
    let s = match m {
        "GET" => intern!(py, "GET"),
        "POST" => intern!(py, "POST"),
        "HEAD" => intern!(py, "HEAD"),
        "PUT" => intern!(py, "PUT"),
        "DELETE" => intern!(py, "DELETE"),
        "OPTIONS" => intern!(py, "OPTIONS"),
        "PATCH" => intern!(py, "PATCH"),
        other => return PyString::new(py, other).into_any(),
    };
    s.clone().into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_latin1_makes_the_str_latin1_does() {
        Python::initialize();
        Python::attach(|py| -> PyResult<()> {
            let every: Vec<u8> = (0..=255).collect();
            for bytes in [
                &b""[..],
                b"/",
                b"/a b?c=d",
                b"caf\xe9",
                b"\x00\x7f\x80\xff",
                &every,
            ] {
                let made = py_latin1(py, bytes)?;
                assert_eq!(made.to_str()?, latin1(bytes), "{bytes:?}");
                assert_eq!(made.len()?, bytes.len(), "one code point per byte");
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn the_template_has_room_for_headers_and_no_deleted_slot() {
        Python::initialize();
        Python::attach(|py| -> PyResult<()> {
            let getsizeof = py.import("sys")?.getattr("getsizeof")?;
            let size =
                |d: &Bound<'_, PyDict>| -> PyResult<usize> { getsizeof.call1((d,))?.extract() };
            let built = PyDict::new(py);
            for i in 0..21 {
                built.set_item(format!("K{i}"), i)?;
            }
            let keys = |d: &Bound<'_, PyDict>| -> Vec<String> {
                d.keys().iter().map(|k| k.to_string()).collect()
            };
            let template = with_room(py, built.copy()?)?;
            assert_eq!(keys(&template), keys(&built), "same keys, same order");
            assert!(template.eq(&built)?, "same values");
            let env = template.copy()?;
            let room = size(&env)?;
            assert!(room > size(&built)?, "grown");
            for i in 0..20 {
                env.set_item(format!("HTTP_{i}"), i)?;
            }
            assert_eq!(size(&env)?, room, "20 header keys fit without a resize");
            // No deleted slot: `dict(copy)` clones the table as it is.
            let plain = template.copy()?;
            let rebuilt = PyDict::new(py);
            rebuilt.update(plain.as_mapping())?;
            assert_eq!(size(&rebuilt)?, size(&plain)?);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn absolute_targets_name_the_host() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://a.example/x", Some("a.example")),
            ("http://a.example:8080/x?q", Some("a.example:8080")),
            ("/x", None),
            ("a.example:80", None),
            ("*", None),
        ];
        for (target, want) in cases {
            let uri: http::Uri = target.parse().unwrap_or_default();
            assert_eq!(target_host(&uri), *want, "{target}");
        }
    }

    #[test]
    fn paths_decode_as_latin1() {
        let cases: &[(&str, &str)] = &[
            ("/a%20b", "/a b"),
            ("/caf%C3%A9", "/caf\u{c3}\u{a9}"),
            ("/%2Fslash", "//slash"),
            ("/plain", "/plain"),
            ("/bad%zz", "/bad%zz"),
            ("/%ff", "/\u{ff}"),
        ];
        for (raw, want) in cases {
            assert_eq!(latin1(&decode_path(raw)), *want, "{raw}");
        }
    }

    #[test]
    fn path_info_past_the_root() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "/x/y", "/x/y"),
            ("/app", "/app/x", "/x"),
            ("/app", "/app", ""),
            ("/app", "/apple", "/apple"),
            ("/app", "/other", "/other"),
        ];
        for (root, path, info) in cases {
            assert_eq!(
                path_info(root.as_bytes(), path.as_bytes()),
                info.as_bytes(),
                "{root} {path}"
            );
        }
    }

    #[test]
    fn header_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("content-type", Some("CONTENT_TYPE")),
            ("content-length", Some("CONTENT_LENGTH")),
            ("x-forwarded-for", Some("HTTP_X_FORWARDED_FOR")),
            ("host", Some("HTTP_HOST")),
            ("x_forwarded_for", None),
        ];
        for (name, want) in cases {
            assert_eq!(header_env_name(name).as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn hosts() {
        let cases: &[(&str, &str, &str)] = &[
            ("example.com", "example.com", "80"),
            ("example.com:8080", "example.com", "8080"),
            ("[::1]:9000", "[::1]", "9000"),
            ("[::1]", "[::1]", "80"),
            ("bad:port:x", "bad:port:x", "80"),
            ("example.com:", "example.com", "80"),
            ("[::1]:", "[::1]", "80"),
        ];
        for (host, name, port) in cases {
            assert_eq!(split_host(host, "80"), (*name, *port), "{host}");
        }
    }
}
