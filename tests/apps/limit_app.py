"""The app behind tests/test_limit_request_body.py: bodies read under --limit-request-body.

Every request's PATH_INFO is recorded under `paths` first, so a test can prove
a request (say a smuggled one) never reached the app.  `/read/...` reads the
whole body in ?chunk= sized reads and answers its size, letting
`siesta.RequestTooLarge` propagate (the server then answers 413); `/catch/...`
catches it, records it under `too-large-<token>` and answers 200 itself;
`/ping` answers `pong`.
"""

import json

from records import dispatch, params, record, token


def _json(start_response, obj):
    body = json.dumps(obj).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _read_all(stream, size):
    total = 0
    while True:
        data = stream.read(size)
        if not data:
            return total
        total += len(data)


def read(environ, start_response):
    size = int(params(environ).get("chunk", 256))
    return _json(start_response, {"size": _read_all(environ["wsgi.input"], size)})


def catch(environ, start_response):
    import siesta  # the server under test provides it

    size = int(params(environ).get("chunk", 256))
    name = "too-large-" + token(environ)
    try:
        total = _read_all(environ["wsgi.input"], size)
    except siesta.RequestTooLarge as exc:
        record(name, f"RequestTooLarge oserror={isinstance(exc, OSError)}")
        return _json(start_response, {"caught": True})
    record(name, f"eof read={total}")
    return _json(start_response, {"caught": False, "size": total})


def ping(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"pong"]


ROUTES = {"read": read, "catch": catch, "ping": ping}


def app(environ, start_response):
    return dispatch(ROUTES, environ, start_response)
