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
    pub(crate) const READ_BUFFER: usize = 64 * 1024;
    pub(crate) const DRAIN_BYTES: u64 = 64 * 1024;
    pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(1);
    pub(crate) const RESPONSE_BUFFER: usize = 256 * 1024;
}

impl Limits {
    /// The deployer's values (from the settings table, which owns their
    /// defaults) beside the fixed ones.
    pub(crate) fn new(
        keep_alive: Duration,
        graceful_timeout: Duration,
        body_timeout: Option<Duration>,
    ) -> Limits {
        Limits {
            keep_alive,
            graceful_timeout,
            body_timeout,
            read_buffer: Self::READ_BUFFER,
            drain_bytes: Self::DRAIN_BYTES,
            drain_time: Self::DRAIN_TIME,
            response_buffer: Self::RESPONSE_BUFFER,
        }
    }
}
