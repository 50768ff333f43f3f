"""An app whose threads each ask for a 1 GiB stack: under an address-space
limit (RLIMIT_AS, set by the test), a worker can start only a few of them."""

import threading

threading.stack_size(1 << 30)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"pong"]
