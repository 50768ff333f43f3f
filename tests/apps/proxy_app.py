"""The app behind nginx and HAProxy in the deployment tests.

`/upload` reads the body in 64 KiB pieces, records `first` under
`upload-<token>` as soon as its first piece arrived (the test gates its
client on that record), and answers the size and SHA-256; `/download?size=`
yields that many bytes in 64 KiB pieces; `/env` dumps the environ;
`/reject` refuses bodies over 64 KiB unread (body_app.reject); `/ping`
answers `pong` (readiness probes).
"""

import hashlib
import json

import body_app
import environ_app
from records import params, record, token

PIECE = 64 * 1024


def upload(environ, start_response):
    stream = environ["wsgi.input"]
    digest, total = hashlib.sha256(), 0
    while data := stream.read(PIECE):
        if total == 0:
            record("upload-" + token(environ), "first")
        total += len(data)
        digest.update(data)
    body = json.dumps({"size": total, "sha256": digest.hexdigest()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def download(environ, start_response):
    size = int(params(environ).get("size", PIECE))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body():
        left = size
        while left > 0:
            n = min(left, PIECE)
            yield b"x" * n
            left -= n

    return body()


def ping(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"pong"]


ROUTES = {
    "upload": upload,
    "download": download,
    "env": environ_app.dump,
    "reject": body_app.reject,
    "ping": ping,
}


def app(environ, start_response):
    handler = ROUTES.get(environ.get("PATH_INFO", "").strip("/").split("/")[0])
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    return handler(environ, start_response)
