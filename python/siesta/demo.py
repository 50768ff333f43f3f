"""The built-in demo app (``siesta siesta.demo:app``, what ``make run`` serves).

``GET /`` shows an upload form; ``POST`` or ``PUT`` to ``/upload`` streams the
uploaded body through ``wsgi.input`` in 64 KiB reads, hashing as it goes,
and answers its size, SHA-256 and MiB/s: memory stays flat whatever the
file's size. ``/echo`` sends the request body straight back, piece by piece,
while it is still arriving.
"""

from __future__ import annotations

import hashlib
import html
import time

CHUNK = 64 * 1024

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Siesta demo</title>
<style>
body{{font:16px system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
code{{background:#eee;padding:0 .2em}}
.r{{background:#f4f8f4;padding:1rem;border-radius:.5rem}}</style>
</head><body>
<h1>Siesta</h1>
<p>Pick a file of any size. Its bytes stream through <code>wsgi.input</code> while the app
hashes them: the server holds about 64 KiB of it at a time.</p>
<form method="post" action="/upload" enctype="application/octet-stream" id="f">
<input type="file" id="file"> <button type="submit">Upload</button></form>
<div id="out">{result}</div>
<p><code>curl -T bigfile http://HOST/upload</code> and
<code>curl --data-binary @file http://HOST/echo</code> work too.</p>
<script>
document.getElementById('f').onsubmit = async (e) => {{
  e.preventDefault();
  const file = document.getElementById('file').files[0];
  if (!file) return;
  const out = document.getElementById('out');
  out.textContent = 'Uploading ' + file.name + '...';
  const res = await fetch('/upload', {{method: 'POST', body: file,
    headers: {{'Content-Type': 'application/octet-stream', 'Accept': 'text/html'}}}});
  out.innerHTML = await res.text();
}};
</script></body></html>
"""


def _upload(environ, start_response):
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    started = time.perf_counter()
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        digest.update(chunk)
    elapsed = max(time.perf_counter() - started, 1e-9)
    rate = size / (1024 * 1024) / elapsed
    if "text/html" in environ.get("HTTP_ACCEPT", ""):
        body = (
            f'<div class="r">Received <b>{size:,}</b> bytes<br>SHA-256 '
            f"<code>{digest.hexdigest()}</code><br>{rate:,.1f} MiB/s</div>"
        ).encode()
        ctype = "text/html; charset=utf-8"
    else:
        body = f"size={size}\nsha256={digest.hexdigest()}\nmib_per_s={rate:.1f}\n".encode()
        ctype = "text/plain; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def _echo(environ, start_response):
    ctype = environ.get("CONTENT_TYPE") or "application/octet-stream"
    start_response("200 OK", [("Content-Type", ctype)])
    stream = environ["wsgi.input"]
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk


def app(environ, start_response):
    """Routes the three demo pages."""
    path = environ.get("PATH_INFO", "/")
    method = environ["REQUEST_METHOD"]
    if path == "/echo":
        return _echo(environ, start_response)
    if method in ("POST", "PUT") and path in ("/", "/upload"):
        return _upload(environ, start_response)
    if path == "/" and method in ("GET", "HEAD"):
        body = PAGE.format(result=html.escape("")).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not found\n"]
