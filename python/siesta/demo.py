"""The built-in demo app (``siesta siesta.demo:app``, what ``make run`` serves).

``GET /`` says what Siesta is and shows two forms that work with or without
JavaScript. The upload form streams a multipart body through
``wsgi.input`` in 64 KiB reads, hashing the file as it goes (memory stays
flat whatever its size); with JavaScript it shows a progress bar and,
beside it, Siesta's own status page (``--metrics-bind``, found through
``$SIESTA_METRICS_URL``) where the upload appears while it streams. The
limit form shows the early refusal: a body whose Content-Length is over the
limit the user picks is answered 413 from the headers alone, without the
app reading a byte of it. ``/echo`` sends a POSTed body back while it
arrives, and explains itself to a GET. The multipart parser here is a small
streaming one, for the demo only.
"""

from __future__ import annotations

import hashlib
import html
import os
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024
SLOW_PAUSE = 0.05  # seconds between reads when "read slowly" is ticked
DEFAULT_LIMIT = 100_000

STYLE = """
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:1rem;color:#222}
h1{margin:.2rem 0}
.tag{font-size:1.05rem;margin:.3rem 0 1rem}
code{background:#eee;padding:0 .2em;overflow-wrap:anywhere}
section{border:1px solid #ddd;border-radius:.5rem;padding:.8rem 1rem;margin:1rem 0}
h2{font-size:1.1rem;margin:.2rem 0 .5rem}
label{display:block;margin:.4rem 0}
input[type=file],input[type=number]{max-width:100%}
button{font-size:1rem;padding:.3rem .9rem;margin-top:.4rem}
progress{width:100%;height:1rem;margin-top:.5rem}
.r{background:#f4f8f4;padding:.8rem;border-radius:.5rem;margin-top:.6rem;overflow-wrap:anywhere}
.r.refused{background:#fdf0ee}
.dim{color:#666;font-size:.9rem}
iframe{width:100%;height:24rem;border:1px solid #ddd;border-radius:.5rem;margin-top:.6rem}
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Siesta demo</title><style>{style}</style></head><body>
<h1>Siesta</h1>
<p class="tag"><b>Siesta is a WSGI server</b> (a drop-in for gunicorn) whose
<code>wsgi.input</code> streams: a slow upload parks one request, not a thread, and your
app can refuse a body before the server reads it.</p>
{status_link}
<section id="upload">
<h2>1. Stream an upload</h2>
<p>Pick a file of any size: the app hashes it 64 KiB at a time as it arrives, so memory
stays flat.{status_hint}</p>
<form method="post" action="/upload" enctype="multipart/form-data" id="upform">
<label>File <input type="file" name="file" id="upfile" required></label>
<label><input type="checkbox" name="slow" value="1" id="upslow"> read slowly
(the app pauses 50 ms after each 64 KiB, so you can watch it)</label>
<button type="submit" id="upgo">Upload</button>
<progress id="upbar" max="100" value="0" hidden></progress>
<div id="upout" class="dim"></div>
</form>
{status_frame}
</section>
<section id="limit">
<h2>2. Refuse a body before reading it</h2>
<p>The app compares Content-Length with your limit and answers 413 from the headers
alone: it never reads <code>wsgi.input</code>, and Siesta reads no more of the body than
the client pushed before the answer.</p>
<form method="get" action="/#limit" id="limset">
<label>Limit in bytes <input type="number" name="limit" id="limit-bytes" min="0"
 value="{limit}"></label>
<noscript><button type="submit">Set the limit</button></noscript>
</form>
<form method="post" action="/limited?limit={limit}" enctype="multipart/form-data"
 id="limform">
<label>File <input type="file" name="file" id="limfile" required></label>
<button type="submit" id="limgo">Send</button>
<div id="limout" class="dim"></div>
</form>
</section>
<p class="dim">From a shell: <code>curl -T bigfile http://{host}/upload</code>,
<code>curl -T file http://{host}/echo</code> (the body comes back while it is still
being sent).</p>
<script>
function send(form, out, bar, url) {{
  const xhr = new XMLHttpRequest();
  const total = Array.from(form.querySelectorAll("input[type=file]"))
    .reduce((n, i) => n + (i.files[0] ? i.files[0].size : 0), 0);
  let sent = 0;
  xhr.open("POST", url);
  xhr.setRequestHeader("X-Demo-Fragment", "1");
  xhr.upload.onprogress = e => {{
    sent = e.loaded;
    if (bar && e.lengthComputable) {{ bar.hidden = false; bar.value = 100 * e.loaded / e.total; }}
    out.textContent = "sent " + e.loaded.toLocaleString() + " of " +
      e.total.toLocaleString() + " bytes";
  }};
  xhr.onload = () => {{
    if (bar) bar.value = 100;
    out.innerHTML = xhr.responseText;
    const note = out.querySelector(".sent");
    if (note) note.textContent = "Your browser had sent " + sent.toLocaleString() + " of " +
      total.toLocaleString() + " file bytes when the answer came.";
  }};
  xhr.onerror = () => {{
    out.textContent = "The server closed the connection after " + sent.toLocaleString() +
      " bytes (it answered before reading the rest).";
  }};
  xhr.send(new FormData(form));
}}
document.getElementById("upform").onsubmit = e => {{
  e.preventDefault();
  const f = e.target;
  send(f, document.getElementById("upout"), document.getElementById("upbar"),
       "/upload" + (document.getElementById("upslow").checked ? "?slow=1" : ""));
}};
document.getElementById("limform").onsubmit = e => {{
  e.preventDefault();
  const limit = document.getElementById("limit-bytes").value || "0";
  send(e.target, document.getElementById("limout"), null,
       "/limited?limit=" + encodeURIComponent(limit));
}};
</script></body></html>
"""

RESULT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Siesta demo</title><style>{style}</style></head><body>
<h1>Siesta</h1>{fragment}<p><a href="/">Back</a></p></body></html>
"""

ECHO_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Siesta demo: /echo</title><style>{style}</style></head><body>
<h1>/echo</h1>
<p>POST or PUT a body here and it comes straight back, piece by piece, while it is
still arriving: Siesta's HTTP/1.1 is full duplex, and the app is a generator that yields
each 64 KiB it reads from <code>wsgi.input</code>.</p>
<p>Try <code>curl -T bigfile http://{host}/echo | sha256sum</code> and compare with
<code>sha256sum bigfile</code>.</p><p><a href="/">Back</a></p></body></html>
"""


class MultipartError(ValueError):
    """The body is not the multipart/form-data its Content-Type says."""


def _boundary(content_type: str) -> bytes | None:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


def _part_name(headers: bytes) -> tuple[str, str | None]:
    """The form field's name and filename from a part's Content-Disposition."""
    name, filename = "", None
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        for item in value.split(";")[1:]:
            k, _, v = item.strip().partition("=")
            if k == "name":
                name = v.strip('"')
            elif k == "filename":
                filename = v.strip('"')
    return name, filename


def multipart(
    read: Callable[[int], bytes], boundary: bytes
) -> Iterator[tuple[str, str | None, bytes | None]]:
    """Streams a multipart body: yields (name, filename, None) when a part starts, then
    (name, filename, data) for each piece of it. Holds about one read, never a part."""
    delim = b"\r\n--" + boundary
    keep = len(delim) + 4
    buf = b"\r\n"  # so the first delimiter looks like every other one
    state, name, filename = "preamble", "", None
    eof = False
    while True:
        if not eof:
            chunk = read(CHUNK)
            eof = not chunk
            buf += chunk
        progressed = True
        while progressed:
            progressed = False
            if state in ("preamble", "body"):
                i = buf.find(delim)
                if i < 0:
                    if state == "body" and len(buf) > keep:
                        yield name, filename, buf[:-keep]
                        buf = buf[-keep:]
                    elif state == "preamble":
                        buf = buf[-keep:]
                    break
                if state == "body" and i:
                    yield name, filename, buf[:i]
                buf = buf[i + len(delim) :]
                state, progressed = "delimiter", True
            elif state == "delimiter":
                if len(buf) < 2:
                    break
                if buf.startswith(b"--"):
                    return
                j = buf.find(b"\r\n")
                if j < 0:
                    break
                buf, state, progressed = buf[j + 2 :], "headers", True
            elif state == "headers":
                j = buf.find(b"\r\n\r\n")
                if j < 0:
                    if len(buf) > 16 * 1024:
                        raise MultipartError("part headers over 16 KiB")
                    break
                name, filename = _part_name(buf[:j])
                buf, state, progressed = buf[j + 4 :], "body", True
                yield name, filename, None
        if eof:
            raise MultipartError("the body ended inside the multipart form")


def _respond(environ, start_response, status: str, fragment: str):
    if environ.get("HTTP_X_DEMO_FRAGMENT"):
        body = fragment
    else:
        body = RESULT_PAGE.format(style=STYLE, fragment=fragment)
    data = body.encode()
    start_response(
        status,
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _wants_text(environ) -> bool:
    """curl -T (no form, no HTML in Accept) gets plain text."""
    return "multipart/form-data" not in environ.get("CONTENT_TYPE", "") and (
        "text/html" not in environ.get("HTTP_ACCEPT", "")
    )


def _upload(environ, start_response):
    stream = environ["wsgi.input"]
    slow = "slow" in parse_qs(environ.get("QUERY_STRING", ""))
    reads = 0

    def read(n: int) -> bytes:
        nonlocal reads
        chunk = stream.read(n)
        reads += 1
        if slow and chunk:
            time.sleep(SLOW_PAUSE)
        return chunk

    digest = hashlib.sha256()
    size, filename = 0, None
    started = time.perf_counter()
    boundary = _boundary(environ.get("CONTENT_TYPE", ""))
    try:
        if boundary is None:  # a raw body (curl -T, fetch with a Blob)
            while chunk := read(CHUNK):
                size += len(chunk)
                digest.update(chunk)
        else:
            for _name, part_file, data in multipart(read, boundary):
                if part_file is not None and data:
                    filename = part_file
                    size += len(data)
                    digest.update(data)
                elif part_file is not None:
                    filename = part_file
    except MultipartError as exc:
        return _respond(
            environ, start_response, "400 Bad Request", f"<p>{html.escape(str(exc))}</p>"
        )
    elapsed = max(time.perf_counter() - started, 1e-9)
    rate = size / (1024 * 1024) / elapsed
    if _wants_text(environ):
        body = f"size={size}\nsha256={digest.hexdigest()}\nmib_per_s={rate:.1f}\n".encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    shown = html.escape(filename or "the body")
    return _respond(
        environ,
        start_response,
        "200 OK",
        f'<div class="r" id="result">Received <b>{shown}</b>: <b class="size">{size:,}</b> '
        f"bytes in {reads:,} reads of at most 64 KiB<br>SHA-256 "
        f'<code class="sha">{digest.hexdigest()}</code><br>{rate:,.1f} MiB/s</div>',
    )


def _limit(environ) -> int:
    """The limit in the query string (``?limit=N``): the limited form's action
    carries it, so that it is known from the head, before any body byte."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        return max(0, int(query.get("limit", [str(DEFAULT_LIMIT)])[0]))
    except ValueError:
        return DEFAULT_LIMIT


def _limited(environ, start_response):
    limit = _limit(environ)
    declared = environ.get("CONTENT_LENGTH")
    if declared and int(declared) > limit:
        # The whole point: answer from the headers, never touch wsgi.input.
        return _respond(
            environ,
            start_response,
            "413 Content Too Large",
            f'<div class="r refused" id="result">Refused: Content-Length '
            f'<b class="declared">{int(declared):,}</b> is over your limit of '
            f'<b>{limit:,}</b> bytes. The app read <b class="taken">0</b> bytes of the '
            "body: it answered from the headers, and Siesta read none of the body for it "
            "(it discards at most 64 KiB the client pushed anyway, then closes)."
            '<br><span class="sent"></span></div>',
        )
    return _upload(environ, start_response)


def _echo(environ, start_response):
    ctype = environ.get("CONTENT_TYPE") or "application/octet-stream"
    start_response("200 OK", [("Content-Type", ctype)])
    stream = environ["wsgi.input"]
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk


def _status_url(environ) -> str | None:
    """Siesta's status page (set by the server for --metrics-bind), as the browser
    reaches it: a wildcard or loopback host becomes the host the page came from."""
    url = os.environ.get("SIESTA_METRICS_URL", "")
    if not url.startswith("http://"):
        return None
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    seen = urlsplit("//" + environ.get("HTTP_HOST", "")).hostname
    if seen and host in ("0.0.0.0", "::", "127.0.0.1", "localhost"):
        host = seen
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{parts.port}/status"


def _index(environ, start_response):
    status = _status_url(environ)
    if status:
        link = (
            f'<p><a href="{html.escape(status)}" id="status-link">Server status</a>: '
            "Siesta's own live view of every worker and request in progress.</p>"
        )
        hint = " Tick <i>read slowly</i> and watch its row below: Siesta's own view."
        frame = f'<iframe src="{html.escape(status)}" title="Siesta status" id="status"></iframe>'
    else:
        link = (
            '<p class="dim">Start Siesta with <code>--metrics-bind 127.0.0.1:9000</code> '
            "(as <code>make run</code> does) to see its live status page here.</p>"
        )
        hint = frame = ""
    page = PAGE.format(
        style=STYLE,
        status_link=link,
        status_hint=hint,
        status_frame=frame,
        limit=_limit(environ),
        host=html.escape(environ.get("HTTP_HOST", "127.0.0.1:8000")),
    )
    data = page.encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


def app(environ, start_response):
    """Routes the demo pages."""
    path = environ.get("PATH_INFO", "/")
    method = environ["REQUEST_METHOD"]
    if path == "/echo" and method in ("POST", "PUT"):
        return _echo(environ, start_response)
    if path == "/echo":
        host = html.escape(environ.get("HTTP_HOST", "HOST"))
        data = ECHO_PAGE.format(style=STYLE, host=host).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [data]
    if method in ("POST", "PUT") and path in ("/", "/upload"):
        return _upload(environ, start_response)
    if method in ("POST", "PUT") and path == "/limited":
        return _limited(environ, start_response)
    if path == "/" and method in ("GET", "HEAD"):
        return _index(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not found\n"]
