"""The WSGI environ the server builds (PEP 3333 keys, types and encodings).

Each test sends raw bytes to the env-dump app (environ_app.dump) and checks the
JSON it answers: percent-decoding and latin-1, raw query and URI, header joining,
absent body keys, protocol strings, peer address, per-mode flags, SCRIPT_NAME
from --root-path, and a wsgiref.validate-wrapped app for GET and POST.
"""

import json
import socket
import time
import urllib.parse

import pytest
import rawhttp


def env_of(server, target="/env", headers=(), body=b"", version="HTTP/1.1", method="GET"):
    resp = server.request(method, target, headers, body, version)
    assert resp.status == 200, resp
    return json.loads(resp.body)


def test_required_keys_and_types(server):
    dump = env_of(server, "/env/x?a=1")
    env, types = dump["environ"], dump["types"]
    assert dump["environ_is_dict"] is True
    for key in (
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "RAW_URI",
        "REQUEST_URI",
        "HTTP_HOST",
        "wsgi.url_scheme",
    ):
        assert types.get(key) == "str", (key, types.get(key))
    assert env["wsgi.version"] == [1, 0] and types["wsgi.version"] == "tuple"
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
        assert types[key] == "bool", key
    assert env["REQUEST_METHOD"] == "GET"
    assert env["wsgi.url_scheme"] == "http"
    # The listening socket, not the Host header, as gunicorn and waitress.
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(server.port))
    assert env["HTTP_HOST"] == "test"
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert set(dump["input_methods"]) >= {"read", "readline", "readlines", "__iter__"}
    assert set(dump["errors_methods"]) >= {"write", "writelines", "flush"}
    assert dump["file_wrapper_callable"] is True


def test_the_environ_holds_the_request_keys_and_no_others(server):
    """Exactly PEP 3333's keys, Siesta's RAW_URI/REQUEST_URI and one per header:
    every environ starts as a copy of one made per worker and grown to have room
    for the headers, and nothing of that shows through, with many headers or few."""
    base = {
        "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "RAW_URI",
        "REQUEST_URI", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME",
        "SERVER_PORT", "SERVER_SOFTWARE", "HTTP_HOST", "wsgi.version", "wsgi.url_scheme",
        "wsgi.input", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess",
        "wsgi.run_once", "wsgi.input_terminated", "wsgi.file_wrapper",
    }  # fmt: skip
    assert set(env_of(server)["environ"]) == base
    many = [(f"X-Field-{i}", str(i)) for i in range(40)]
    env = env_of(server, headers=many)["environ"]
    assert set(env) == base | {f"HTTP_X_FIELD_{i}" for i in range(40)}
    assert all(env[f"HTTP_X_FIELD_{i}"] == str(i) for i in range(40))


def test_multithread_flag_is_true_in_both_modes(server):
    """Both modes call the app concurrently in one process: pool threads, or
    greenlets that are threads to a monkey-patched app (gunicorn's gevent
    worker says True too)."""
    env = env_of(server)["environ"]
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False  # one worker by default


def test_several_workers_are_multiprocess(start_server, mode):
    """Issue 13: -w 2 runs two worker processes, and the environ says so."""
    srv = start_server("router_app:app", "-w", "2", mode=mode)
    assert len(srv.worker_pids()) == 2
    env = env_of(srv, "/env")["environ"]
    assert env["wsgi.multiprocess"] is True
    srv.assert_serving()


def test_path_info_is_percent_decoded_as_latin1(server):
    env = env_of(server, "/env/caf%C3%A9/%FF/a%2Fb%20c?q=%C3%A9&x=a+b")["environ"]
    assert env["PATH_INFO"].encode("latin-1") == b"/env/caf\xc3\xa9/\xff/a/b c"
    assert env["QUERY_STRING"] == "q=%C3%A9&x=a+b"
    assert env["RAW_URI"] == "/env/caf%C3%A9/%FF/a%2Fb%20c?q=%C3%A9&x=a+b"
    assert env["REQUEST_URI"] == env["RAW_URI"]
    assert env["SCRIPT_NAME"] == ""


def test_raw_bytes_past_ascii_in_the_target_are_latin1(server):
    """Raw UTF-8 bytes in the query (hyper takes them) reached QUERY_STRING
    and RAW_URI decoded as UTF-8: `'x=\u20ac'` could not be encoded to
    latin-1, which frameworks do (a 500 any client could cause). Every byte
    is now one code point, as in PATH_INFO."""
    raw = b"/env/caf\xc3\xa9?x=\xe2\x82\xac&y=\xc3\xa9"
    env = env_of(server, raw.decode("latin-1"))["environ"]
    assert env["PATH_INFO"].encode("latin-1") == b"/env/caf\xc3\xa9"
    assert env["QUERY_STRING"].encode("latin-1") == b"x=\xe2\x82\xac&y=\xc3\xa9"
    assert env["RAW_URI"].encode("latin-1") == raw
    assert env["REQUEST_URI"] == env["RAW_URI"]


def test_raw_bytes_that_are_not_utf8_are_served(server):
    """hyper refuses a target whose raw bytes are not UTF-8 (it was a 400).
    Siesta hands hyper the target with those bytes escaped: PATH_INFO has
    each raw byte as one latin-1 code point (PEP 3333), and the query
    decodes to the same bytes."""
    raw = b"/env/caf\xe9?q=\xe9&r=\xc3\xa9"
    env = env_of(server, raw.decode("latin-1"))["environ"]
    assert env["PATH_INFO"].encode("latin-1") == b"/env/caf\xe9"
    assert env["QUERY_STRING"] == "q=%E9&r=%C3%A9"
    assert env["RAW_URI"] == "/env/caf%E9?q=%E9&r=%C3%A9"
    query = urllib.parse.parse_qs(env["QUERY_STRING"], encoding="latin-1")
    assert query == {"q": ["\xe9"], "r": ["\xc3\xa9"]}


def test_raw_targets_escaped_in_a_pipelined_batch_and_bodies_left_alone(server):
    """Escaping makes a read longer than hyper asked for: the rest is read
    next, in order. A request line split over two reads is held back until
    it is whole. Body bytes that look like such a request line are data."""
    body = b"x\xe9 GET /\xe9 HTTP/1.1\r\n"
    post = rawhttp.build_request("POST", "/env?read=1", body=body)
    batch = b"".join(
        rawhttp.build_request("GET", f"/env/{n}/" + "\xe9" * 400 + "?q=\xff") for n in range(60)
    )
    with server.connect() as conn:
        conn.send(post + batch)
        first = json.loads(conn.read_response().body)
        paths = [json.loads(conn.read_response().body)["environ"]["PATH_INFO"] for _ in range(60)]
    assert first["body"].encode("latin-1") == body
    assert paths == [f"/env/{n}/" + "\xe9" * 400 for n in range(60)]


@pytest.mark.parametrize("raw,status", [(2000, 200), (4094 - 20, 200), (4094, 414)])
def test_limit_request_line_counts_raw_bytes_as_sent(server, raw, status):
    """Escaped, each raw byte takes three: the limit (4094 by default) still
    counts the line as the client sent it."""
    line = b"GET /env/" + b"\xe9" * raw + b" HTTP/1.1"
    with server.connect() as conn:
        conn.send(line + b"\r\nHost: x\r\n\r\n")
        resp = conn.read_response()
    assert resp.status == status, (len(line), resp)


def test_escaped_lines_pipelined_are_each_counted_as_sent(server):
    """Several escaped lines read together: each is held to the limit as sent."""
    lines = [
        b"GET /env/A" + b"\xe9" * 1500,
        b"GET /env/B" + b"\xe9" * 10,
        b"GET /env/C" + b"\xe9" * 3000,
    ]
    with server.connect() as conn:
        conn.send(b"".join(line + b" HTTP/1.1\r\nHost: x\r\n\r\n" for line in lines))
        statuses = [conn.read_response().status for _ in lines]
    assert statuses == [200, 200, 200]


def test_good_requests_before_a_bad_chunk_line_are_all_answered(server):
    """Escaped lines that outgrow hyper's buffer wait in `replay`: a chunk line
    refused later in the same read must not discard them."""
    raw = b"".join(
        rawhttp.build_request("GET", f"/env/R{i}/" + "\xe9" * 1300) for i in range(3)
    ) + b"".join(rawhttp.build_request("GET", f"/env/p{i}") for i in range(5))
    bad = (
        b"POST /env/bad?read=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n5 \r\nhello\r\n0\r\n\r\n"
    )
    with server.connect() as conn:
        conn.send(raw + bad)
        statuses = [conn.read_response().status for _ in range(9)]
        assert conn.wait_closed()
    assert statuses == [200] * 8 + [400]


def test_a_held_line_start_survives_a_bad_chunk_in_the_same_read(server):
    """The start of a request line held back for its LF is handed over even
    when the read that ends it also holds a chunk line that is refused."""
    with server.connect() as conn:
        conn.send(b"DELE")
        time.sleep(0.3)
        conn.send(
            b"TE /env HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5 \r\nhello\r\n0\r\n\r\n"
        )
        resp = conn.read_response()
    assert resp.status == 200, resp
    assert json.loads(resp.body)["environ"]["REQUEST_METHOD"] == "DELETE"


@pytest.mark.parametrize("piece", [1, 7])
def test_raw_target_sent_in_pieces(server, piece):
    raw = rawhttp.build_request("GET", "/env/caf\xe9?q=\xe9")
    with server.connect() as conn:
        for at in range(0, len(raw), piece):
            conn.send(raw[at : at + piece])
            time.sleep(0.001)
        resp = conn.read_response()
    assert resp.status == 200, resp
    env = json.loads(resp.body)["environ"]
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/env/caf\xe9", "q=%E9")


def test_query_string_present_and_empty_without_query(server):
    env = env_of(server, "/env")["environ"]
    assert env.get("QUERY_STRING") == ""
    assert env["RAW_URI"] == "/env"


def test_repeated_headers_joined_with_comma(server):
    headers = [("X-Multi", "a"), ("X-Multi", "b"), ("X-Multi", "c d")]
    env = env_of(server, headers=headers)["environ"]
    assert env["HTTP_X_MULTI"] == "a,b,c d"


def test_repeated_cookies_joined_with_semicolon(server):
    env = env_of(server, headers=[("Cookie", "a=1"), ("Cookie", "b=2")])["environ"]
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_header_names_mapped_to_http_keys(server):
    env = env_of(server, headers=[("X-Dashed-Name", "v1"), ("accept", "text/html")])["environ"]
    assert env["HTTP_X_DASHED_NAME"] == "v1"
    assert env["HTTP_ACCEPT"] == "text/html"


def test_latin1_header_value(server):
    with server.connect() as conn:
        conn.send(b"GET /env HTTP/1.1\r\nHost: test\r\nX-Latin: caf\xe9\r\n\r\n")
        resp = conn.read_response()
    assert resp.status == 200
    assert json.loads(resp.body)["environ"]["HTTP_X_LATIN"] == "caf\xe9"


def test_no_content_type_or_length_when_absent(server):
    env = env_of(server)["environ"]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
        assert key not in env, key


def test_content_type_and_length_when_present(server):
    env = env_of(server, "/env?read=1", [("Content-Type", "text/x-test")], b"hello", method="POST")
    assert env["environ"]["CONTENT_TYPE"] == "text/x-test"
    assert env["environ"]["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env["environ"]
    assert "HTTP_CONTENT_LENGTH" not in env["environ"]
    assert env["body"] == "hello"


def test_chunked_request_has_no_content_length(server):
    body = rawhttp.chunked([b"hel", b"lo"])
    dump = env_of(server, "/env?read=1", [("Transfer-Encoding", "chunked")], body, method="POST")
    assert "CONTENT_LENGTH" not in dump["environ"]
    assert dump["environ"]["wsgi.input_terminated"] is True
    assert dump["body"] == "hello"


def test_server_protocol_http11(server):
    assert env_of(server)["environ"]["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_server_protocol_http10(server):
    with server.connect() as conn:
        conn.send(b"GET /env HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
    assert resp.status == 200
    env = json.loads(resp.body)["environ"]
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "HTTP_HOST" not in env
    assert env["SERVER_NAME"] == "127.0.0.1"  # no Host header: the listening address
    assert env["SERVER_PORT"] == str(server.port)


def test_remote_addr_and_port(server):
    with server.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/env"))
        resp = conn.read_response()
        local_port = conn.local_port
    env = json.loads(resp.body)["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)


def test_script_name_from_root_path(start_server, mode):
    srv = start_server("router_app:app", "--root-path", "/prefix", mode=mode)
    env = env_of(srv, "/prefix/env/sub?x=1")["environ"]
    assert env["SCRIPT_NAME"] == "/prefix"
    assert env["PATH_INFO"] == "/env/sub"
    assert env["RAW_URI"] == "/prefix/env/sub?x=1"


def test_script_name_from_environment_variable(start_server, mode):
    srv = start_server("router_app:app", mode=mode, env={"SCRIPT_NAME": "/mounted"})
    env = env_of(srv, "/mounted/env")["environ"]
    assert env["SCRIPT_NAME"] == "/mounted"
    assert env["PATH_INFO"] == "/env"


def test_script_name_from_raw_env_mounts_the_app(start_server, mode):
    """QA (session 30): `-e SCRIPT_NAME=/app` (or `raw_env` in a config file) reached
    the app's os.environ but did not mount it, where gunicorn mounts it (it reads the
    worker's environment, which -e sets): a deploy under a sub-path got 404s. It
    mounts over the launch environment's SCRIPT_NAME; an explicit --root-path wins."""
    args = ("-e", "SCRIPT_NAME=/app")
    srv = start_server("router_app:app", *args, mode=mode, env={"SCRIPT_NAME": "/launch"})
    env = env_of(srv, "/app/env")["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/env")
    srv = start_server("router_app:app", "-e", "SCRIPT_NAME=", mode=mode, env={"SCRIPT_NAME": "/x"})
    env = env_of(srv, "/env")["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/env")
    srv = start_server("router_app:app", *args, "--root-path", "/root", mode=mode)
    env = env_of(srv, "/root/env")["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/root", "/env")


def test_script_name_from_a_trusted_proxy_mounts_the_request(start_server, mode):
    """QA probe (session 25): nginx's `proxy_set_header SCRIPT_NAME /mnt;` mounts
    an app under a prefix in gunicorn (its default forwarder headers), and Siesta
    ignored it: the app saw PATH_INFO /mnt/env and answered 404. From a trusted
    peer (127.0.0.1 by default) it is the request's SCRIPT_NAME now, in the
    environ and the access log; from any other peer it is dropped, as every
    header with an underscore is."""
    srv = start_server(
        "router_app:app",
        "--access-logfile",
        "-",
        "--access-logformat",
        "%(U)s|%({SCRIPT_NAME}e)s",
        mode=mode,
    )
    env = env_of(srv, "/mnt/env", headers=[("SCRIPT_NAME", "/mnt/")])["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "/env")
    assert "HTTP_SCRIPT_NAME" not in env
    assert srv.stdout.wait_for(r"^/env\|/mnt$", 10.0) is not None, srv.stdout.text()
    # Decoded, as the path it is compared with (review, session 25).
    env = env_of(srv, "/a%20b/env", headers=[("SCRIPT_NAME", "/a%20b")])["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/a b", "/env")
    # No mount an app could not put in a URL as it is (`//host` is another host).
    for odd in ("//evil.example", "/%5Cevil.example", "/mnt?x=1", "/a/../mnt", "mnt", "/%7f"):
        env = env_of(srv, "/env", headers=[("SCRIPT_NAME", odd)])["environ"]
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/env"), odd
    untrusted = start_server("router_app:app", "--forwarded-allow-ips", "10.9.9.9", mode=mode)
    env = env_of(untrusted, "/env", headers=[("SCRIPT_NAME", "/mnt")])["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/env")
    # gunicorn's --forwarder-headers: without SCRIPT_NAME, a trusted peer's is dropped too.
    unlisted = start_server("router_app:app", "--forwarder-headers", "", mode=mode)
    env = env_of(unlisted, "/env", headers=[("SCRIPT_NAME", "/mnt")])["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/env")


def test_wsgi_errors_goes_to_error_log(server):
    """As written, as gunicorn writes it (QA probe, session 25: every line got
    Siesta's prefix at ERROR, so Flask's `app.logger.warning`, which formats
    its own line, came out as `[...] [ERROR] [...] WARNING in app: ...`)."""
    mark = server.log_mark()
    env_of(server, "/env?errors=WARNING%20in%20app:%20errors-stream-marker-7f3a")
    line = server.wait_log("errors-stream-marker-7f3a", since=mark)
    assert line is not None and line.string == "WARNING in app: errors-stream-marker-7f3a", (
        server.log(mark)
    )


def test_env_option_sets_process_environment(start_server, mode):
    srv = start_server("router_app:app", "-e", "WSGI_TEST_E=from-cli", mode=mode)
    assert env_of(srv, "/env?osenv=WSGI_TEST_E")["osenv"] == "from-cli"


def test_validator_get(server):
    mark = server.log_mark()
    resp = server.get("/validated?x=1")
    assert resp.status == 200, (resp, server.log(mark))
    assert resp.body == b"validated:"
    server.assert_serving()
    assert "without being closed" not in server.log(mark)


def test_validator_post(server):
    mark = server.log_mark()
    resp = server.request("POST", "/validated", [("Content-Type", "text/plain")], b"payload")
    assert resp.status == 200, (resp, server.log(mark))
    assert resp.body == b"validated:payload"
    server.assert_serving()
    assert "without being closed" not in server.log(mark)


def _unix_env(path, raw):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(rawhttp.TIMEOUT)
        s.connect(str(path))
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200", head
    return json.loads(body)["environ"]


def test_a_unix_socket_names_the_server_by_host(start_server, tmp_path):
    """A unix socket has no name a URL could use: SERVER_NAME and
    SERVER_PORT come from Host (its port, else the scheme's), or from the
    listener when there is none."""
    path = tmp_path / "s.sock"
    start_server("router_app:app", "--bind", f"unix:{path}")
    close = b"Connection: close\r\n\r\n"
    env = _unix_env(path, b"GET /env HTTP/1.1\r\nHost: example.com:8080\r\n" + close)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8080")
    env = _unix_env(path, b"GET /env HTTP/1.1\r\nHost: example.com\r\n" + close)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "80")
    env = _unix_env(path, b"GET http://other.org:81/env HTTP/1.1\r\nHost: example.com\r\n" + close)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("other.org", "81")
    env = _unix_env(path, b"GET /env HTTP/1.0\r\n\r\n")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    assert "HTTP_HOST" not in env
    # Behind a proxy that said HTTPS (a unix socket's peer is trusted), the
    # port a name without one implies is 443, as wsgi.url_scheme says, an
    # absolute-form target's too (its own scheme is only what the client
    # typed); an empty port is the scheme's.
    https = b"X-Forwarded-Proto: https\r\n"
    env = _unix_env(path, b"GET /env HTTP/1.1\r\nHost: example.com\r\n" + https + close)
    assert (env["wsgi.url_scheme"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "https",
        "example.com",
        "443",
    )
    env = _unix_env(path, b"GET /env HTTP/1.0\r\n" + https + b"\r\n")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "443")
    env = _unix_env(path, b"GET http://other.org/env HTTP/1.1\r\nHost: x\r\n" + https + close)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("other.org", "443")
    env = _unix_env(path, b"GET /env HTTP/1.1\r\nHost: example.com:\r\n" + https + close)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "443")
