"""The default test app: dispatches on the first PATH_INFO segment.

Every request's PATH_INFO is appended to the `paths` record first, so a test can
prove a path (say /smuggled) never reached the app.  The handlers live in
environ_app.py, body_app.py and response_app.py; /ping answers `pong`.
"""

import body_app
import environ_app
import response_app
from records import dispatch


def ping(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"pong"]


ROUTES = {
    "ping": ping,
    "env": environ_app.dump,
    "validated": environ_app.validated,
    "read": body_app.read_method,
    "sha256": body_app.sha256,
    "echo": body_app.echo,
    "read-exact": body_app.read_exact,
    "read-some": body_app.read_some,
    "stream-echo": body_app.stream_echo,
    "reject": body_app.reject,
    "effect": body_app.side_effect,
    "disconnect": body_app.catch_disconnect,
    "read-hold": body_app.read_then_hold,
    "two-readers": body_app.two_readers,
    "fail-hold": body_app.fail_then_hold,
    "thrown-hold": body_app.thrown_then_hold,
    "reader-left": body_app.reader_left_behind,
    "framing": response_app.framing,
    "status": response_app.status,
    "header": response_app.header,
    "hop": response_app.hop,
    "late-start": response_app.late_start,
    "exc": response_app.exc,
    "raise": response_app.fail,
    "write": response_app.write_callable,
    "file": response_app.file_wrapper,
    "stream": response_app.stream,
    "gated": response_app.gated,
    "distinct": response_app.distinct,
    "close": response_app.close,
}


def app(environ, start_response):
    return dispatch(ROUTES, environ, start_response)
