"""Behind a proxy, Siesta alone: wsgi.url_scheme from trusted peers and the PROXY protocol.

Issue "Behind a load balancer": `X-Forwarded-Proto: https` from a trusted
proxy left `wsgi.url_scheme` as `http`, and there was no PROXY protocol.
These tests talk raw bytes to a real server: scheme headers (gunicorn's
`--secure-scheme-headers`, RFC 7239 `Forwarded`) count only from peers in
`--forwarded-allow-ips` (and on unix sockets, as in gunicorn), disagreeing
ones get 400; with `--proxy-protocol` every connection must open with a v1
or v2 preamble from `--proxy-allow-from`, whose client becomes `REMOTE_ADDR`,
and anything else is closed without a byte of response and without reaching
the app. The same setups behind real nginx and HAProxy are in
test_deploy_proxies.py.
"""

import json
import socket
import struct

import pytest
import rawhttp
from siesta_process import run_siesta

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def env_of(server, headers=(), conn=None):
    """The environ the app saw for GET /env (on `conn` when given)."""
    req = rawhttp.build_request("GET", "/env", headers)
    if conn is None:
        resp = server.request("GET", "/env", headers)
    else:
        conn.send(req)
        resp = conn.read_response()
    assert resp.status == 200, resp
    return json.loads(resp.body)["environ"]


def proxy_v2(src, sport, tls=False, command=1):
    """A PROXY v2 header for a TCP4 client (LOCAL when command is 0)."""
    body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack(">HH", sport, 80)
    if tls:
        body += struct.pack(">BHBI", 0x20, 5, 0x01, 0)  # PP2_TYPE_SSL, client SSL
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack(">H", len(body)) + body


def test_trusted_proxy_sets_the_scheme(start_server, mode):
    server = start_server("router_app:app", mode=mode)  # default: 127.0.0.1 is trusted
    assert env_of(server)["wsgi.url_scheme"] == "http"
    for header in (
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Protocol", "ssl"),
        ("Forwarded", "for=192.0.2.1;proto=https"),
    ):
        env = env_of(server, [header, ("X-Forwarded-For", "192.0.2.1")])
        assert env["wsgi.url_scheme"] == "https", header
        # As in gunicorn: REMOTE_ADDR stays the peer, X-Forwarded-For is the app's.
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["HTTP_X_FORWARDED_FOR"] == "192.0.2.1"
        assert "HTTPS" not in env  # gunicorn sets none either
    env = env_of(server, [("X-Forwarded-Proto", "http"), ("Forwarded", "proto=https")])
    assert env["wsgi.url_scheme"] == "http", "X-Forwarded-Proto wins over Forwarded"
    # The scheme is per request: the next one on the same connection starts over.
    with server.connect() as conn:
        assert env_of(server, [("X-Forwarded-Proto", "https")], conn)["wsgi.url_scheme"] == "https"
        assert env_of(server, [], conn)["wsgi.url_scheme"] == "http"


def test_conflicting_scheme_headers_are_refused(start_server, mode):
    server = start_server("router_app:app", mode=mode)
    token = rawhttp.new_token()
    with server.connect() as conn:
        conn.send(
            rawhttp.build_request(
                "GET", f"/env/{token}", [("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on")]
            )
        )
        resp = conn.read_response()
        assert resp.status == 400, resp
        assert conn.wait_closed()
    assert not any(token in p for p in server.records("paths")), "the app was called"
    assert server.wait_log(r"conflicting_scheme"), server.log()
    server.assert_serving()


def test_untrusted_peer_changes_nothing(start_server):
    server = start_server("router_app:app", "--forwarded-allow-ips", "10.0.0.0/8,192.0.2.1")
    for headers in (
        [("X-Forwarded-Proto", "https")],
        [("Forwarded", "proto=https")],
        [("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on")],  # no 400 either
    ):
        assert env_of(server, headers)["wsgi.url_scheme"] == "http", headers


def test_forwarded_allow_ips_from_environment(start_server):
    server = start_server("router_app:app", env={"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    assert env_of(server, [("X-Forwarded-Proto", "https")])["wsgi.url_scheme"] == "http"


def test_custom_and_empty_scheme_headers(start_server):
    server = start_server("router_app:app", "--secure-scheme-headers", "X-Scheme=https")
    assert env_of(server, [("X-Forwarded-Proto", "https")])["wsgi.url_scheme"] == "http"
    assert env_of(server, [("X-Scheme", "https")])["wsgi.url_scheme"] == "https"
    off = start_server("router_app:app", "--secure-scheme-headers", "")
    for header in (("X-Forwarded-Proto", "https"), ("Forwarded", "proto=https")):
        assert env_of(off, [header])["wsgi.url_scheme"] == "http", header


def test_unix_socket_peers_are_trusted(start_server, tmp_path):
    path = tmp_path / "s.sock"
    start_server("router_app:app", "--bind", f"unix:{path}", "--forwarded-allow-ips", "")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(rawhttp.TIMEOUT)
        s.connect(str(path))
        s.sendall(
            rawhttp.build_request(
                "GET", "/env", [("X-Forwarded-Proto", "https"), ("Connection", "close")]
            )
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["environ"]["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "1.2.3"])
def test_bad_address_lists_are_one_line_errors(value):
    for flag in ("--forwarded-allow-ips", "--proxy-allow-from"):
        result = run_siesta(flag, value, "router_app:app")
        assert result.returncode == 1, result  # a bad value (2 before session 24)
        assert "Traceback" not in result.stderr
        assert "is not an IP address or network" in result.stderr, result.stderr


def test_proxy_protocol_names_the_client(start_server, mode):
    server = start_server("router_app:app", "--proxy-protocol", "auto", mode=mode)
    with server.connect() as conn:
        conn.send(b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n")
        env = env_of(server, [], conn)
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.9", "5555")
        assert env["wsgi.url_scheme"] == "http"
        # Keep-alive: the preamble came once, the next request is plain HTTP.
        env = env_of(server, [], conn)
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.9", "5555")
    with server.connect() as conn:
        # Preamble and request in one segment: not one request byte is lost.
        conn.send(proxy_v2("203.0.113.7", 40000, tls=True) + rawhttp.build_request("GET", "/env"))
        resp = conn.read_response()
        env = json.loads(resp.body)["environ"]
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "40000")
        assert env["wsgi.url_scheme"] == "https", "the v2 SSL TLV says the client used TLS"
    with server.connect() as conn:
        conn.send(b"PROXY TCP6 2001:db8::5 ::1 6000 80\r\n")
        assert env_of(server, [], conn)["REMOTE_ADDR"] == "2001:db8::5"
    with server.connect() as conn:
        conn.send(proxy_v2("203.0.113.7", 1, command=0))  # LOCAL: a health check
        assert env_of(server, [], conn)["REMOTE_ADDR"] == "127.0.0.1"
    with server.connect() as conn:
        conn.send(b"PROXY UNKNOWN\r\n")
        assert env_of(server, [], conn)["REMOTE_ADDR"] == "127.0.0.1"


def refused(server, *pieces):
    """Sends pieces on a fresh connection; True if it was closed with no byte of response."""
    with server.connect() as conn:
        try:
            for p in pieces:
                conn.send(p)
        except OSError:
            pass  # closed while we were still sending
        data = b""
        try:
            data = conn.read_to_eof()
        except ConnectionResetError:
            pass
        return data == b""


def test_proxy_protocol_refusals(start_server):
    server = start_server("router_app:app", "--proxy-protocol", "auto", "--header-timeout", "1")
    token = rawhttp.new_token()
    req = rawhttp.build_request("GET", f"/env/{token}")
    mark = server.log_mark()
    assert refused(server, req), "no preamble"
    assert refused(server, b"PROXY TCP4 192.0.2.9 nope 1 2\r\n", req), "malformed v1"
    assert refused(server, b"PROXY TCP4 192.0.2.9 127.0.0.1 1 2\n" + req), "bare LF"
    assert refused(server, b"PROXY " + b"x" * 200 + b"\r\n" + req), "longer than 107 bytes"
    assert refused(server, V2_SIGNATURE + b"\x21\x11\x00\x0c\x01\x02"), "truncated v2"
    assert refused(server, b"PROXY TCP4 192.0.2.9 127.0.0.1"), "slow: never finished"
    assert not any(token in p for p in server.records("paths")), "the app was called"
    assert server.wait_log(r"no complete PROXY protocol header within", since=mark), server.log()
    assert server.wait_log(r"no PROXY protocol header \[proxy_protocol\]", since=mark)
    v1_only = start_server("router_app:app", "--proxy-protocol", "v1")
    assert refused(v1_only, proxy_v2("203.0.113.7", 1) + req), "v2 where v1 is required"
    stranger = start_server(
        "router_app:app", "--proxy-protocol", "auto", "--proxy-allow-from", "10.0.0.1"
    )
    assert refused(stranger, b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n" + req)
    assert stranger.wait_log(r"not in --proxy-allow-from"), stranger.log()
    with server.connect() as conn:
        conn.send(b"PROXY UNKNOWN\r\n")
        assert env_of(server, [], conn)["REMOTE_ADDR"] == "127.0.0.1", "still serving"
