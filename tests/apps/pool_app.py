"""An app for the thread-pool tests: parked uploads, app work, and the pool seen from inside.

`/upload?token=T` records T under `arrived`, reads the whole body (parked in
`wsgi.input.read()` while the client holds it back), then works and answers
the body's size; `/work` only works. Working is a short sleep counted in a
module-wide gauge, and `/max` answers the most requests ever seen working at
once (outside `read()`). `/locked?token=T` records T under `locking`, takes a
module-wide lock (bounded wait), records T under `locked`, reads its whole
body while holding the lock, and answers the body's size. `/threads`
answers how many threads named `siesta-N` `threading` knows;
`/spin?seconds=S` holds its thread in the app (bounded); `/pieces?token=T&n=N`
records T under `arrived` and reads its body N bytes at a time (so it comes
back from `read()` at every piece), answering its size; anything else
answers `pong`. Paths are recorded by `dispatch`.
"""

import json
import re
import threading
import time

from records import dispatch, params, record, token

WORK = 0.05
_lock = threading.Lock()
_app_lock = threading.Lock()  # what /locked holds across read()
_working = 0
_max_working = 0
POOL_NAME = re.compile(r"^siesta-\d+$")


def _answer(start_response, body, content_type="text/plain"):
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _work():
    """The app's own work, counted: how many requests are in here at once."""
    global _working, _max_working
    with _lock:
        _working += 1
        _max_working = max(_max_working, _working)
    try:
        time.sleep(WORK)
    finally:
        with _lock:
            _working -= 1


def upload(environ, start_response):
    record("arrived", token(environ))
    body = environ["wsgi.input"].read()
    _work()
    return _answer(start_response, str(len(body)).encode())


def pieces(environ, start_response):
    record("arrived", token(environ))
    n = int(params(environ).get("n", "100"))
    size = 0
    while block := environ["wsgi.input"].read(n):
        size += len(block)
    return _answer(start_response, str(size).encode())


def locked(environ, start_response):
    """Holds a lock across wsgi.input.read(), as an app holding a connection might."""
    record("locking", token(environ))
    if not _app_lock.acquire(timeout=20.0):
        return _answer(start_response, b"lock timeout")
    try:
        record("locked", token(environ))
        body = environ["wsgi.input"].read()
    finally:
        _app_lock.release()
    return _answer(start_response, str(len(body)).encode())


def work(environ, start_response):
    _work()
    return _answer(start_response, b"worked")


def most(environ, start_response):
    with _lock:
        body = json.dumps({"max": _max_working}).encode()
    return _answer(start_response, body, "application/json")


def pool_threads(environ, start_response):
    names = [t.name for t in threading.enumerate()]
    body = json.dumps({"pool": sum(1 for n in names if POOL_NAME.match(n))}).encode()
    return _answer(start_response, body, "application/json")


def spin(environ, start_response):
    deadline = time.monotonic() + float(params(environ).get("seconds", "30"))
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return _answer(start_response, b"spun")


def ping(environ, start_response):
    return _answer(start_response, b"pong")


ROUTES = {
    "upload": upload,
    "pieces": pieces,
    "work": work,
    "locked": locked,
    "max": most,
    "threads": pool_threads,
    "spin": spin,
    "ping": ping,
}


def app(environ, start_response):
    return dispatch(ROUTES, environ, start_response)
