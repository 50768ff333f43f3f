"""gunicorn's ``pre_request`` and ``post_request`` hooks, around the app.

Only when a config file defines one of them is the app wrapped (no cost
otherwise): ``pre_request(worker, req)`` runs before the app with a
request object carrying gunicorn's usual attributes (``method``, ``path``,
``query``, ``uri``, ``version``, ``headers``, ``remote_addr``), and
``post_request(worker, req, environ, resp)`` once the response is done
(after the iterable's ``close()``), with ``resp.status``,
``resp.status_code`` and ``resp.headers``. A ``pre_request`` that raises
fails the request (a 500, its traceback logged), as in gunicorn, so a hook
can guard the app; a ``post_request`` that raises is logged and the
request goes on (``hooks.Hooks.call``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Request:
    """What ``pre_request``/``post_request`` see of the request (gunicorn's names)."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.method = environ.get("REQUEST_METHOD", "")
        self.path = environ.get("PATH_INFO", "")
        self.query = environ.get("QUERY_STRING", "")
        self.uri = environ.get("RAW_URI", self.path)
        self.version = tuple(
            int(n) for n in environ.get("SERVER_PROTOCOL", "HTTP/1.1")[5:].split(".")
        )
        self.headers = [
            (key[5:].replace("_", "-"), value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        self.remote_addr = environ.get("REMOTE_ADDR", "")


class Response:
    """What ``post_request`` sees of the response."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []

    @property
    def status_code(self) -> int | None:
        return int(self.status.split()[0]) if self.status else None


class _Closing:
    """The app's iterable, with post_request after its close()."""

    def __init__(self, result: Iterable[bytes], done: Callable[[], None]) -> None:
        self._result, self._done = result, done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


def wrap(app: Any, hooks: Any, worker: Any) -> Any:
    """The app with the request hooks around it, or the app itself when none is set."""
    if "pre_request" not in hooks and "post_request" not in hooks:
        return app

    def with_hooks(environ: dict[str, Any], start_response: Any) -> Any:
        req = Request(environ)
        resp = Response()
        hooks.run("pre_request", worker, req)  # raising fails the request, as in gunicorn

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            resp.status, resp.headers = status, headers
            return start_response(status, headers, exc_info)

        result = app(environ, start)
        return _Closing(result, lambda: hooks.call("post_request", worker, req, environ, resp))

    return with_hooks
