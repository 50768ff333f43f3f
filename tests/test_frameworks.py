"""Real frameworks served by Siesta: Flask, Django, Falcon, Bottle and httpbin.

Each framework app (tests/apps/*_app.py, and httpbin:app from its package) gets
requests through `requests` (forms, multipart uploads, JSON, streaming) and
through raw sockets (a chunked upload, pipelining), in every mode.
"""

import hashlib
import json

import payloads
import pytest
import rawhttp
import requests

UPLOAD = b"".join(payloads.pieces(300_000, 65536))


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False  # never a proxy: loopback only
        yield session


def upload_check(resp, filename="data.bin"):
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["filename"] == filename
    assert got["size"] == len(UPLOAD)
    assert got["sha256"] == hashlib.sha256(UPLOAD).hexdigest()
    return got


def chunked_post(srv, target, data, content_type="application/octet-stream"):
    pieces = [data[i : i + 7000] for i in range(0, len(data), 7000)]
    with srv.connect() as conn:
        conn.send(
            rawhttp.build_request(
                "POST", target, [("Transfer-Encoding", "chunked"), ("Content-Type", content_type)]
            )
            + rawhttp.chunked(pieces)
        )
        return conn.read_response()


def test_flask(start_server, mode, http):
    srv = start_server("flask_app:app", mode=mode)
    assert http.get(srv.url("/hello"), timeout=10).text == "hello from flask"
    form = http.post(srv.url("/form"), data={"a": ["1", "2"], "b": "caf\xe9"}, timeout=10)
    assert form.json() == {"form": {"a": ["1", "2"], "b": ["caf\xe9"]}}
    up = http.post(
        srv.url("/upload"), files={"file": ("data.bin", UPLOAD)}, data={"note": "x"}, timeout=10
    )
    assert upload_check(up)["form"] == {"note": "x"}
    payload = {"list": [1, 2, 3], "nested": {"k": "v"}, "text": "\u2603"}
    assert http.post(srv.url("/json"), json=payload, timeout=10).json() == {"received": payload}
    stream = http.get(srv.url("/stream?count=5"), stream=True, timeout=10)
    assert stream.headers.get("Transfer-Encoding") == "chunked"
    assert list(stream.iter_lines()) == [f"line {i}".encode() for i in range(5)]


def test_flask_chunked_json_raw(start_server, mode):
    srv = start_server("flask_app:app", mode=mode)
    body = json.dumps({"values": list(range(5000))}).encode()
    resp = chunked_post(srv, "/json", body, "application/json")
    assert resp.status == 200
    assert json.loads(resp.body) == {"received": {"values": list(range(5000))}}


def test_django(start_server, mode, http):
    srv = start_server("django_app:application", mode=mode)
    assert http.get(srv.url("/hello"), timeout=10).text == "hello from django"
    form = http.post(srv.url("/form"), data={"a": ["1", "2"], "b": "x y"}, timeout=10)
    assert form.json() == {"method": "POST", "form": {"a": ["1", "2"], "b": ["x y"]}}
    up = http.post(
        srv.url("/upload"), files={"file": ("data.bin", UPLOAD)}, data={"note": "n"}, timeout=10
    )
    assert upload_check(up)["form"] == {"note": "n"}
    assert http.post(srv.url("/protected"), data={"a": "1"}, timeout=10).status_code == 403


def test_django_sqlite(start_server, mode, http):
    srv = start_server("django_app:application", mode=mode)
    start = http.get(srv.url("/hits"), timeout=10).json()["count"]
    for i in range(5):
        assert http.post(srv.url(f"/hits?name=n{i}"), timeout=10).json()["count"] == start + i + 1
    assert http.get(srv.url("/hits"), timeout=10).json() == {"count": start + 5}


def test_django_pipelined_forms_raw(start_server, mode):
    srv = start_server("django_app:application", mode=mode)
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    with srv.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", "/form", form, b"a=1&a=2")
            + rawhttp.build_request("POST", "/form", form, b"b=caf%C3%A9")
        )
        first, second = conn.read_response(), conn.read_response()
    assert json.loads(first.body)["form"] == {"a": ["1", "2"]}
    assert json.loads(second.body)["form"] == {"b": ["caf\u00e9"]}


def test_falcon(start_server, mode, http):
    srv = start_server("falcon_app:app", mode=mode)
    assert http.get(srv.url("/items"), timeout=10).json() == {"items": []}
    created = http.post(srv.url("/items"), json={"name": "one"}, timeout=10)
    assert created.status_code == 201 and created.json() == {"count": 1}
    assert http.get(srv.url("/items"), timeout=10).json() == {"items": [{"name": "one"}]}
    raw = http.post(srv.url("/raw"), data=UPLOAD, timeout=10).json()
    assert raw == {"size": len(UPLOAD), "sha256": hashlib.sha256(UPLOAD).hexdigest()}
    teapot = http.get(srv.url("/teapot"), timeout=10)
    assert (teapot.status_code, teapot.text) == (418, "short and stout")


def test_falcon_chunked_body_raw(start_server, mode):
    srv = start_server("falcon_app:app", mode=mode)
    resp = chunked_post(srv, "/raw", UPLOAD)
    assert resp.status == 200
    assert json.loads(resp.body) == {
        "size": len(UPLOAD),
        "sha256": hashlib.sha256(UPLOAD).hexdigest(),
    }


def test_bottle(start_server, mode, http):
    srv = start_server("bottle_app:app", mode=mode)
    assert http.get(srv.url("/hello/world"), timeout=10).text == "hello world"
    form = http.post(srv.url("/form"), data={"a": ["1", "2"], "b": "z"}, timeout=10)
    assert form.json() == {"form": {"a": ["1", "2"], "b": ["z"]}}
    upload_check(http.post(srv.url("/upload"), files={"file": ("data.bin", UPLOAD)}, timeout=10))
    raw = http.post(srv.url("/raw"), data=UPLOAD, timeout=10).json()
    assert raw == {"size": len(UPLOAD), "sha256": hashlib.sha256(UPLOAD).hexdigest()}


def test_bottle_pipelined_raw(start_server, mode):
    srv = start_server("bottle_app:app", mode=mode)
    with srv.connect() as conn:
        conn.send(
            rawhttp.build_request("GET", "/hello/a") + rawhttp.build_request("GET", "/hello/b")
        )
        assert conn.read_response().body == b"hello a"
        assert conn.read_response().body == b"hello b"


def test_httpbin(start_server, mode, http):
    srv = start_server("httpbin:app", mode=mode)
    form = http.post(srv.url("/post"), data={"k": "v", "n": "1"}, timeout=10).json()
    assert form["form"] == {"k": "v", "n": "1"}
    payload = {"a": [1, 2], "b": None}
    got = http.post(srv.url("/post"), json=payload, timeout=10).json()
    assert got["json"] == payload
    lines = list(http.get(srv.url("/stream/5"), stream=True, timeout=10).iter_lines())
    assert [json.loads(line)["id"] for line in lines] == [0, 1, 2, 3, 4]
    teapot = http.get(srv.url("/status/418"), timeout=10)
    assert teapot.status_code == 418
    assert "teapot" in teapot.text


def test_httpbin_raw_pipelined_posts(start_server, mode):
    """httpbin refuses chunked bodies from any server but gunicorn, so Content-Length."""
    srv = start_server("httpbin:app", mode=mode)
    json_head = [("Content-Type", "application/json")]
    with srv.connect() as conn:
        conn.send(
            rawhttp.build_request("POST", "/post", json_head, b'{"x": 1}')
            + rawhttp.build_request("GET", "/status/418")
            + rawhttp.build_request("POST", "/post", json_head, b'{"y": [2]}')
        )
        first, second, third = (conn.read_response() for _ in range(3))
    assert json.loads(first.body)["json"] == {"x": 1}
    assert second.status == 418
    assert json.loads(third.body)["json"] == {"y": [2]}
