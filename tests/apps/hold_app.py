"""An app whose requests can be held inside it, to fill every app slot.

`/hold?go=NAME&token=T` records `held-T`, then waits (bounded, 20 s) for the
test to create the record NAME before answering `released`; anything else
answers `pong`. Used by the load-shedding and end-of-request tests.
"""

from records import params, record, token, wait_for


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        record(f"held-{token(environ)}", "held")
        body = b"released" if wait_for(params(environ)["go"], timeout=20.0) else b"timeout"
    elif environ["PATH_INFO"] == "/raise":
        raise RuntimeError("boom")
    else:
        body = b"pong"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
