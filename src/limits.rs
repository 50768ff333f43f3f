//! Every size and time bound Siesta applies to a connection or a request, in one place.
//!
//! Each bound that a deployer can set names its command-line option; the
//! others are fixed by the design (DESIGN.md §2) and documented here so a
//! reader never has to hunt for a magic number. This module holds values
//! only: enforcing them is the job of `server/` (head and connection bounds)
//! and `wsgi/` (body and response bounds). No default of an option is
//! written here: `python/siesta/config.py` holds them all, and `config.rs`
//! fills these fields from it.

use std::time::Duration;

/// Bounds in force for one worker, built once by `Config`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// `--keep-alive`: idle time allowed between two requests on one connection.
    pub keep_alive: Duration,
    /// `--header-timeout`: time allowed for a complete request head, from
    /// its first byte (from the accept for a connection's first request);
    /// `None` (option 0) waits forever.
    pub header_timeout: Option<Duration>,
    /// `--limit-request-line`, `--limit-request-fields`,
    /// `--limit-request-field-size`: the bounds `server::head` checks.
    pub head: HeadLimits,
    /// `--graceful-timeout`: how long a TERM waits for in-flight requests.
    pub graceful_timeout: Duration,
    /// `--body-timeout`: idle time allowed between body bytes while the app
    /// waits in `wsgi.input.read()`; then `ClientTimeout` is raised.
    pub body_timeout: Option<Duration>,
    /// `--queue-timeout`: how long a request may wait for a free thread or
    /// greenlet slot before it is answered 503 (load shedding).
    pub queue_timeout: Option<Duration>,
    /// `--limit-request-body`: the largest request body, `None` for no limit.
    /// A larger declared `Content-Length` is refused with 413 before the app
    /// runs (`server/service.rs`); a chunked body that grows past it fails
    /// the app's read with `RequestTooLarge` (`wsgi/input.rs`).
    pub limit_request_body: Option<u64>,
    /// `--max-connections`: connections served at once by one worker; more
    /// wait in the kernel's listen backlog.
    pub max_connections: usize,
    /// Largest head hyper accepts, and the size of its read buffer: the
    /// read-ahead of a request body is bounded by this (about 64 KiB).
    pub read_buffer: usize,
    /// Unread body bytes discarded after the app is done, to keep the
    /// connection alive; past this the connection is closed.
    pub drain_bytes: u64,
    /// Time allowed for that discard.
    pub drain_time: Duration,
    /// Response bytes queued between the app and the socket before the app's
    /// `write()` or iteration waits for the client (backpressure).
    pub response_buffer: usize,
    /// What that grows to while a client drains faster than the app's
    /// wake-ups refill it (`exchange/pipe.rs`). Gevent mode only: there a
    /// wake-up is a round trip through the hub, in thread mode a futex, and
    /// more bytes in flight cost thread mode more than its wake-ups save.
    pub response_buffer_max: usize,
}

/// The bounds on one request head, checked by `server::head::check_head`
/// (and, for the field count, by hyper's parser first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// `--limit-request-line`: longest request line (method, SP, target as
    /// sent, SP, version) in bytes; `None` (option 0) leaves only the read
    /// buffer as a bound. Over it: 414.
    pub request_line: Option<usize>,
    /// `--limit-request-fields`: most header field lines; 0 or more than
    /// `MAX_FIELDS` in the option means `MAX_FIELDS`, as in gunicorn. Over it: 431.
    pub fields: usize,
    /// `--limit-request-field-size` (also `--limit-request-field_size`):
    /// largest field, measured as name + `": "` + value; `None` (option 0)
    /// leaves only the read buffer as a bound. Over it: 431.
    pub field_size: Option<usize>,
}

impl HeadLimits {
    /// gunicorn's cap on `--limit-request-fields`.
    pub(crate) const MAX_FIELDS: usize = 32768;

    /// The bounds from the three options' raw values (0 meaning "no limit"
    /// for the sizes and `MAX_FIELDS` for the count).
    pub(crate) fn from_options(request_line: usize, fields: usize, field_size: usize) -> Self {
        HeadLimits {
            request_line: (request_line > 0).then_some(request_line),
            fields: if fields == 0 {
                Self::MAX_FIELDS
            } else {
                fields.min(Self::MAX_FIELDS)
            },
            field_size: (field_size > 0).then_some(field_size),
        }
    }
}

impl Limits {
    /// The fixed bounds, with placeholders for the deployer's values: build
    /// with `Limits { keep_alive: ..., ..Limits::FIXED }` (config.rs does),
    /// so no option's default is written here, only in the settings table.
    pub(crate) const FIXED: Limits = Limits {
        keep_alive: Duration::ZERO,
        header_timeout: None,
        head: HeadLimits {
            request_line: None,
            fields: HeadLimits::MAX_FIELDS,
            field_size: None,
        },
        graceful_timeout: Duration::ZERO,
        body_timeout: None,
        queue_timeout: None,
        limit_request_body: None,
        max_connections: usize::MAX,
        read_buffer: 64 * 1024,
        drain_bytes: 64 * 1024,
        drain_time: Duration::from_secs(1),
        response_buffer: 256 * 1024,
        response_buffer_max: 256 * 1024,
    };
}
