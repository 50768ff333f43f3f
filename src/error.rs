//! Siesta's error types and the one table that maps them to what a peer sees.
//!
//! `StartupError` is for the deployer (a bad bind, a bad option): one line on
//! stderr, never a traceback. `InputError` is what reading `wsgi.input` can
//! meet, mapped to the Python exceptions `ClientDisconnected`,
//! `ClientTimeout` and `RequestTooLarge`. `ResponseError` is an app that broke the WSGI contract;
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
}

/// Why Siesta answered a request itself instead of (or instead of finishing)
/// the app's response. Every response the server makes is one of these, and
/// `status()` is the one table from refusal to status code; the access log,
/// the error log and the metrics name the refusal by `reason()`.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// hyper could not parse the head (bad request line, bad field syntax).
    #[error("malformed request head")]
    MalformedHead,
    /// `--limit-request-line`, or a request line longer than the read
    /// buffer (`server/head_clock.rs` answers those before hyper parses).
    #[error("request line longer than --limit-request-line")]
    RequestLineTooLong,
    /// `--limit-request-fields`.
    #[error("more header fields than --limit-request-fields")]
    TooManyFields,
    /// `--limit-request-field-size`.
    #[error("a header field longer than --limit-request-field-size")]
    FieldTooLarge,
    /// The whole head is larger than the read buffer.
    #[error("request head too large")]
    HeadTooLarge,
    /// `--limit-request-body`.
    #[error("request body larger than --limit-request-body")]
    BodyTooLarge,
    /// `--body-timeout`: a read of the body waited that long for a byte,
    /// and the app let `ClientTimeout` end the request.
    #[error("no request body byte within --body-timeout")]
    BodyTimeout,
    /// A `Content-Length` of 2^64 - 2 or more: no body that long can be
    /// framed (hyper 1.x keeps the top two values for its own use).
    #[error("Content-Length beyond 2^64 - 3 bytes")]
    LengthTooLarge,
    /// `--header-timeout`: the head did not arrive in time.
    #[error("request head not received within --header-timeout")]
    HeaderTimeout,
    /// Missing or repeated `Host` on HTTP/1.1, or one that is not a host
    /// with an optional port (RFC 9112 §3.2).
    #[error("missing, repeated or malformed Host header")]
    BadHost,
    /// A Transfer-Encoding other than one final `chunked` (or any on HTTP/1.0).
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    /// Differing, repeated or malformed Content-Length.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.3).
    #[error("both Content-Length and Transfer-Encoding (request smuggling)")]
    LengthAndChunked,
    /// A trusted proxy's `--secure-scheme-headers` disagree on the scheme
    /// (gunicorn's `InvalidSchemeHeaders`).
    #[error("scheme headers from a trusted proxy disagree")]
    ConflictingScheme,
    /// A field that must appear once appears twice (`Content-Type`).
    #[error("repeated header field that must be single")]
    DuplicateField,
    /// A method with a lower-case letter (methods are case-sensitive, and
    /// one component that folds case and one that does not would read
    /// `head` or `get` as two different requests), a `#`, or fewer than 3
    /// or more than 20 characters: gunicorn refuses these too.
    #[error(
        "unconventional request method (a lower-case letter or '#', or not 3 to 20 characters)"
    )]
    BadMethod,
    /// A `#` in the request target: a fragment, which no client sends
    /// (RFC 9112 §3.2), and which hyper's parser would drop with what
    /// follows it (`server/framing.rs` marks the line).
    #[error("a '#' in the request target (a fragment is never sent to a server)")]
    Fragment,
    /// `CONNECT`: a tunnel, which a WSGI app cannot give, and whose 2xx
    /// hyper would take as the start of one (RFC 9110 §9.3.6).
    #[error("CONNECT asks for a tunnel, which WSGI apps cannot give")]
    Connect,
    /// An `Expect` other than `100-continue`, the one expectation Siesta
    /// meets (RFC 9110 §10.1.1: 417, as gunicorn answers).
    #[error("an expectation other than 100-continue")]
    ExpectationFailed,
    /// The body's chunked framing is broken.
    #[error("malformed request body")]
    MalformedBody,
    /// `--queue-timeout`: no app slot became free in time.
    #[error("no app slot free within --queue-timeout")]
    Overloaded,
    /// The worker is stopping and takes no new requests.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The client went away (or half-closed) before the request body was
    /// complete, and the app let `ClientDisconnected` end the request.
    #[error("client disconnected before the request body was complete")]
    ClientGone,
    /// A stop cut the connection while the app read the body (its
    /// `--graceful-timeout` ran out, or INT/QUIT), and the app let
    /// `ClientDisconnected` through.
    #[error("connection cut by the stop (--graceful-timeout ran out, or INT/QUIT)")]
    StopCut,
    /// The app raised before sending a response head.
    #[error("the application failed")]
    AppFailed,
    /// The app side ended without a response (an internal error).
    #[error("no response from the application")]
    NoResponse,
}

impl RequestError {
    /// The one table from refusal to status.
    pub(crate) fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            RequestError::MalformedHead
            | RequestError::BadHost
            | RequestError::BadTransferEncoding
            | RequestError::BadContentLength
            | RequestError::LengthAndChunked
            | RequestError::ConflictingScheme
            | RequestError::DuplicateField
            | RequestError::BadMethod
            | RequestError::Fragment
            | RequestError::MalformedBody
            | RequestError::ClientGone => S::BAD_REQUEST,
            RequestError::RequestLineTooLong => S::URI_TOO_LONG,
            RequestError::TooManyFields
            | RequestError::FieldTooLarge
            | RequestError::HeadTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::BodyTooLarge | RequestError::LengthTooLarge => S::PAYLOAD_TOO_LARGE,
            RequestError::HeaderTimeout | RequestError::BodyTimeout => S::REQUEST_TIMEOUT,
            RequestError::Overloaded | RequestError::ShuttingDown | RequestError::StopCut => {
                S::SERVICE_UNAVAILABLE
            }
            RequestError::Connect => S::NOT_IMPLEMENTED,
            RequestError::ExpectationFailed => S::EXPECTATION_FAILED,
            RequestError::AppFailed | RequestError::NoResponse => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short stable name for logs and metrics (the option name for limits).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            RequestError::MalformedHead => "malformed_head",
            RequestError::RequestLineTooLong => "limit_request_line",
            RequestError::TooManyFields => "limit_request_fields",
            RequestError::FieldTooLarge => "limit_request_field_size",
            RequestError::HeadTooLarge => "head_too_large",
            RequestError::BodyTooLarge => "limit_request_body",
            RequestError::LengthTooLarge => "content_length_too_large",
            RequestError::HeaderTimeout => "header_timeout",
            RequestError::BodyTimeout => "body_timeout",
            RequestError::BadHost => "bad_host",
            RequestError::BadTransferEncoding => "bad_transfer_encoding",
            RequestError::BadContentLength => "bad_content_length",
            RequestError::LengthAndChunked => "length_and_chunked",
            RequestError::ConflictingScheme => "conflicting_scheme",
            RequestError::DuplicateField => "duplicate_field",
            RequestError::BadMethod => "bad_method",
            RequestError::Fragment => "fragment",
            RequestError::Connect => "connect",
            RequestError::ExpectationFailed => "expectation_failed",
            RequestError::MalformedBody => "malformed_body",
            RequestError::Overloaded => "queue_timeout",
            RequestError::ShuttingDown => "shutting_down",
            RequestError::ClientGone => "client_disconnected",
            RequestError::StopCut => "cut_by_stop",
            RequestError::AppFailed => "app_error",
            RequestError::NoResponse => "no_response",
        }
    }

    /// Whether this refuses the request for its head, before the app was
    /// called: its target or a field may be far over the limits, and the
    /// logs cut them (`log::shortened`); the error log has it as a
    /// warning, as gunicorn's `Invalid request` lines. A request refused
    /// later passed every head limit and is logged whole (a head that
    /// timed out was never parsed: nothing of it is logged).
    pub(crate) fn for_head(self) -> bool {
        matches!(
            self,
            RequestError::MalformedHead
                | RequestError::RequestLineTooLong
                | RequestError::TooManyFields
                | RequestError::FieldTooLarge
                | RequestError::HeadTooLarge
                | RequestError::LengthTooLarge
                | RequestError::BadHost
                | RequestError::BadTransferEncoding
                | RequestError::BadContentLength
                | RequestError::LengthAndChunked
                | RequestError::ConflictingScheme
                | RequestError::DuplicateField
                | RequestError::BadMethod
                | RequestError::Fragment
                | RequestError::Connect
                | RequestError::ExpectationFailed
        )
    }

    /// Whether the connection must close after this answer: a client whose
    /// framing is in doubt cannot be trusted with another request.
    pub(crate) fn closes(self) -> bool {
        !matches!(self, RequestError::AppFailed)
    }
}

/// Why reading the request body stopped short.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum InputError {
    #[error("client disconnected before the request body was complete")]
    Disconnected,
    /// The response was sent, and the body, read after it (in the
    /// iterable's `close()`), was still incomplete when `--keep-alive`
    /// closed the connection, as it closes any idle one.
    #[error(
        "request body incomplete when --keep-alive closed the connection: once the \
         response is sent, a body read after it (in close()) waits at most --keep-alive"
    )]
    KeepAliveCut,
    #[error("malformed request body (bad chunked framing)")]
    Malformed,
    #[error("client sent no body bytes within the body timeout")]
    Timeout,
    #[error("request body larger than --limit-request-body")]
    TooLarge,
    #[error("request body abandoned: a response was sent before the body was read")]
    Abandoned,
    /// `Expect: 100-continue`: the response began before the app's first
    /// read, so no `100 Continue` can go out and the client keeps the body.
    #[error(
        "request body not sent: the response began before the app's first read, \
         while the client waited for 100 Continue to send it (Expect: 100-continue)"
    )]
    HeldBack,
}

/// The app broke the WSGI contract in `start_response` or its iterable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum ResponseError {
    #[error("invalid status line {0:?}: expected a str like '200 OK' with a code from 200 to 599")]
    BadStatus(String),
    #[error("invalid response header {0:?}")]
    BadHeader(String),
    #[error("response headers must be a list of (name, value) tuples, not {0}")]
    HeadersNotList(String),
    #[error("hop-by-hop header {0:?} is not allowed in a WSGI response")]
    HopByHop(String),
    #[error("more than {0} response headers")]
    TooManyHeaders(usize),
    #[error("start_response() called a second time without exc_info")]
    AlreadyStarted,
    #[error("write() or body data before start_response()")]
    NotStarted,
    #[error("response body items must be bytes, not {0}")]
    NotBytes(String),
}
