"""gunicorn's ``pre_request`` and ``post_request`` hooks, around the app.

Only when a config file defines one of them is the app wrapped (no cost
otherwise): ``pre_request(worker, req)`` runs before the app with a
request object carrying gunicorn's usual attributes (``method``, ``path``,
``query``, ``uri``, ``version``, ``headers``, ``remote_addr``; what the hook
changes of the method, path, query and headers reaches the app, as in
gunicorn), and
``post_request(worker, req, environ, resp)`` once the response is done
(after the iterable's ``close()``, or once the app raised; once
``pre_request`` raised, with ``{}`` and ``None`` as the environ and the
response, as gunicorn calls it),
with ``resp.status``,
``resp.status_code`` and ``resp.headers``. A ``pre_request`` that raises
fails the request (a 500, its traceback logged), as in gunicorn, so a hook
can guard the app; a ``post_request`` that raises is logged and the
request goes on (``hooks.Hooks.call``).

With ``--log-level debug`` and no ``pre_request`` of the config's, each
request is logged as gunicorn's default ``pre_request`` logs it (``GET
/path``, at debug); at any other level nothing wraps the app for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote_to_bytes

from siesta import _siesta

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Request:
    """What ``pre_request``/``post_request`` see of the request (gunicorn's names)."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.method = environ.get("REQUEST_METHOD", "")
        # As gunicorn's: the target as sent, not PATH_INFO (percent-decoded,
        # SCRIPT_NAME taken off), so a hook's checks mean what they meant there.
        self.uri = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
        self.path = raw_path(self.uri)
        self.query = environ.get("QUERY_STRING", "")
        self.version = tuple(
            int(n) for n in environ.get("SERVER_PROTOCOL", "HTTP/1.1")[5:].split(".")
        )
        # As gunicorn's: every field, Content-Type and Content-Length included.
        self.headers = [
            (key[5:].replace("_", "-"), value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        for key in _UNPREFIXED:
            if environ.get(key):
                self.headers.append((key.replace("_", "-"), environ[key]))
        # As gunicorn's: the peer as the socket has it, (host, port) over TCP.
        host, port = environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT")
        self.remote_addr: Any = (host, int(port)) if port and port.isdigit() else host
        self.peer_addr = self.remote_addr
        self.scheme = environ.get("wsgi.url_scheme", "http")

    def snapshot(self) -> tuple[Any, ...]:
        """What ``pre_request`` may change, as it was (for ``apply``)."""
        return (self.method, self.path, self.query, list(self.headers))

    def apply(self, seen: tuple[Any, ...], environ: dict[str, Any]) -> None:
        """Carries what ``pre_request`` changed of the request into the environ the
        app is called with, as gunicorn builds its environ after the hook: the
        method, the path, the query and the headers (``RAW_URI`` stays the target
        as sent, as gunicorn's)."""
        method, path, query, headers = seen
        if self.method != method:
            environ["REQUEST_METHOD"] = self.method
        if self.path != path:
            environ["PATH_INFO"] = _path_info(self.path, environ.get("SCRIPT_NAME", ""))
        if self.query != query:
            environ["QUERY_STRING"] = self.query
        if self.headers != headers:
            for key in [k for k in environ if k.startswith("HTTP_") or k in _UNPREFIXED]:
                del environ[key]
            for name, value in self.headers:
                key = name.upper().replace("-", "_")
                if key not in _UNPREFIXED:
                    key = "HTTP_" + key
                sep = "; " if key == "HTTP_COOKIE" else ","
                environ[key] = f"{environ[key]}{sep}{value}" if key in environ else value


# The fields whose environ keys have no HTTP_ (PEP 3333).
_UNPREFIXED = ("CONTENT_TYPE", "CONTENT_LENGTH")


def _path_info(path: str, script: str) -> str:
    """``PATH_INFO`` for a path a hook set: percent-decoded, each byte one latin-1
    character (PEP 3333), the mount point taken off at a segment's boundary, as the
    server takes it off."""
    try:
        raw = path.encode("latin-1")  # the request line's characters, as gunicorn's
    except UnicodeEncodeError:
        raw = path.encode("utf-8")
    decoded = unquote_to_bytes(raw).decode("latin-1")
    if script and (decoded == script or decoded.startswith(script + "/")):
        decoded = decoded[len(script) :]
    return decoded


def raw_path(uri: str) -> str:
    """The path of a request target as sent: no query or fragment, and for an
    absolute-form target (``http://host/p``) no scheme or authority."""
    end = len(uri)
    for mark in ("?", "#"):
        at = uri.find(mark)
        if 0 <= at < end:
            end = at
    path = uri[:end]
    if not path.startswith("/") and "://" in path:  # absolute-form
        rest = path.split("://", 1)[1]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else ""
    return path


_LOGGED_TARGET = 256  # as Siesta's own error lines cut a request's target


def log_request(environ: dict[str, Any]) -> None:
    """gunicorn's default ``pre_request``: ``METHOD /path`` at debug."""
    path = raw_path(environ.get("RAW_URI") or environ.get("PATH_INFO", ""))
    if len(path) > _LOGGED_TARGET:
        path = f"{path[:_LOGGED_TARGET]}...[{len(path)}B]"
    _siesta.log("debug", f"{environ.get('REQUEST_METHOD', '')} {path}")


class Response:
    """What ``post_request`` sees of the response."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        # As gunicorn's: the declared Content-Length (None when none), and
        # the body's bytes the app gave (its iterable and write()).
        self.response_length: int | None = None
        self.sent = 0

    @property
    def status_code(self) -> int | None:
        return int(self.status.split()[0]) if self.status else None


class _Closing:
    """The app's iterable, with post_request after its close()."""

    def __init__(self, result: Iterable[bytes], done: Callable[[], None], resp: Response) -> None:
        self._result, self._done, self._resp = result, done, resp

    def __iter__(self) -> Iterator[bytes]:
        resp = self._resp
        for chunk in self._result:
            if isinstance(chunk, bytes):  # anything else is refused where it is sent
                resp.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


def wrap(app: Any, hooks: Any, worker: Any, debug: bool = False) -> Any:
    """The app with the request hooks around it (``debug``: with gunicorn's default
    ``pre_request`` where the config has none), or the app itself when none is set."""
    pre = "pre_request" in hooks
    worker_pid = os.getpid()
    if not pre and "post_request" not in hooks:
        if not debug:
            return app

        def logged(environ: dict[str, Any], start_response: Any) -> Any:
            log_request(environ)
            return app(environ, start_response)

        return logged

    def with_hooks(environ: dict[str, Any], start_response: Any) -> Any:
        req = Request(environ)
        resp = Response()
        done = lambda: hooks.call("post_request", worker, req, environ, resp)  # noqa: E731

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            resp.status, resp.headers = status, headers
            write = start_response(status, headers, exc_info)  # checks them first
            code = resp.status_code or 0
            resp.response_length = None  # 1xx and 204 have none, as in gunicorn
            for name, value in headers:
                if name.lower() == "content-length" and code >= 200 and code != 204:
                    resp.response_length = int(value)

            def counted(data: bytes) -> Any:
                outcome = write(data)
                if isinstance(data, bytes):
                    resp.sent += len(data)
                return outcome

            return counted

        if pre:
            seen = req.snapshot()
            try:
                hooks.run("pre_request", worker, req)  # raising fails the request, as in gunicorn
            except BaseException:
                # As gunicorn's, whose post_request is in a `finally`, with the
                # environ and the response not made yet: {} and None.
                hooks.call("post_request", worker, req, {}, None)
                raise
            req.apply(seen, environ)
        elif debug:
            log_request(environ)
        try:
            result = app(environ, start)
        except BaseException:
            # A request the app failed is done too. Not in a child the app
            # forked, which leaves with what it raised.
            if os.getpid() == worker_pid:
                done()
            raise
        return _Closing(result, done, resp)

    return with_hooks
