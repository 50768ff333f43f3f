"""Side-effect records that test apps leave for the test process to read.

Apps append one line per event to a file named after the event in the directory
given by the WSGI_TEST_RECORD_DIR environment variable (set by the test harness
for each server); without it, recording is a no-op.  The test side reads these
files with SiestaServer.records()/wait_records().
"""

import os
import re
import time
from urllib.parse import parse_qs

RECORD_DIR = os.environ.get("WSGI_TEST_RECORD_DIR")
_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def record(name, line):
    """Append `line` to the record called `name` (a safe file name)."""
    if not RECORD_DIR:
        return
    assert _SAFE.match(name), f"unsafe record name {name!r}"
    with open(os.path.join(RECORD_DIR, name), "a", encoding="utf-8", errors="replace") as f:
        f.write(line.replace("\n", "\\n") + "\n")


def exists(name):
    return bool(RECORD_DIR) and os.path.exists(os.path.join(RECORD_DIR, name))


def wait_for(name, timeout=10.0):
    """Poll (bounded) until the test created the record `name`; True if it did."""
    deadline = time.monotonic() + timeout
    while not exists(name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def params(environ):
    """The query string as a dict of first values."""
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def token(environ):
    """The `token` query parameter, used to name per-test records."""
    value = params(environ).get("token", "none")
    assert _SAFE.match(value), f"unsafe token {value!r}"
    return value


def dispatch(routes, environ, start_response):
    """Records PATH_INFO under `paths`, then calls the handler its first segment
    names in `routes` (404 when there is none): the test apps' router."""
    path = environ.get("PATH_INFO", "")
    record("paths", path)
    handler = routes.get(path.split("/")[1] if path.count("/") else "")
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    return handler(environ, start_response)
