//! Every size and time bound Siesta applies to a connection or a request, in one place.
//!
//! Each bound that a deployer can set names its command-line option; the
//! others are fixed by the design (DESIGN.md §2) and documented here so a
//! reader never has to hunt for a magic number. This module holds values
//! only: enforcing them is the job of `server/` (head and connection bounds)
//! and `wsgi/` (body and response bounds). The next milestone's
//! `--limit-request-*` and timeout options slot in beside these.

use std::time::Duration;

/// Bounds in force for one worker, built once by `Config`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// `--keep-alive`: idle time allowed between two requests on one connection.
    pub keep_alive: Duration,
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
}

impl Limits {
    /// The fixed bounds, with placeholders for the deployer's values: build
    /// with `Limits { keep_alive: ..., ..Limits::FIXED }` (config.rs does),
    /// so no option's default is written here, only in the settings table.
    pub(crate) const FIXED: Limits = Limits {
        keep_alive: Duration::ZERO,
        graceful_timeout: Duration::ZERO,
        body_timeout: None,
        queue_timeout: None,
        limit_request_body: None,
        max_connections: usize::MAX,
        read_buffer: 64 * 1024,
        drain_bytes: 64 * 1024,
        drain_time: Duration::from_secs(1),
        response_buffer: 256 * 1024,
    };
}
