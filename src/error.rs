//! Siesta's error types and the one table that maps them to what a peer sees.
//!
//! `StartupError` is for the deployer (a bad bind, a bad option): one line on
//! stderr, never a traceback. `InputError` is what reading `wsgi.input` can
//! meet, mapped to the Python exceptions `ClientDisconnected` and
//! `ClientTimeout`. `ResponseError` is an app that broke the WSGI contract;
//! it always becomes a 500 (or an aborted connection once headers are out).

use thiserror::Error;

/// A failure before the server can serve: reported once, then exit.
#[derive(Debug, Error)]
pub(crate) enum StartupError {
    #[error("Connection in use: {0}")]
    AddrInUse(String),
    #[error("Cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("Invalid bind address {0:?}: expected HOST:PORT, [V6]:PORT, unix:PATH or fd://N")]
    BadBind(String),
    #[error("Cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// A request Siesta refuses before the app sees it. hyper answers the
/// malformed ones it finds while parsing (400, 414, 431); these are the ones
/// it lets through.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    #[error("both Content-Length and Transfer-Encoding (request smuggling)")]
    LengthAndChunked,
    #[error("the app slots are full")]
    Overloaded,
}

impl RequestError {
    /// The one table from refusal to status.
    pub(crate) fn status(self) -> http::StatusCode {
        match self {
            RequestError::LengthAndChunked => http::StatusCode::BAD_REQUEST,
            RequestError::Overloaded => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why reading the request body stopped short.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum InputError {
    #[error("client disconnected before the request body was complete")]
    Disconnected,
    #[error("malformed request body (bad chunked framing)")]
    Malformed,
    #[error("client sent no body bytes within the body timeout")]
    Timeout,
    #[error("request body abandoned: a response was sent before the body was read")]
    Abandoned,
}

/// The app broke the WSGI contract in `start_response` or its iterable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum ResponseError {
    #[error("invalid status line {0:?}: expected a str like '200 OK' with a code from 200 to 599")]
    BadStatus(String),
    #[error("invalid response header {0:?}")]
    BadHeader(String),
    #[error("hop-by-hop header {0:?} is not allowed in a WSGI response")]
    HopByHop(String),
    #[error("start_response() called a second time without exc_info")]
    AlreadyStarted,
    #[error("write() or body data before start_response()")]
    NotStarted,
    #[error("response body items must be bytes, not {0}")]
    NotBytes(String),
}
