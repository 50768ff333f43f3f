"""docs/deploy.md's proxies for real: nginx and HAProxy from Debian in front of Siesta.

Issue "Behind a load balancer": nginx buffers request bodies by default,
which silently undoes streaming; the scheme a TLS proxy reports was
ignored; there was no PROXY protocol. Each test takes its config from
docs/deploy.md (`deploy_doc.config`), changes only the addresses, and runs
it: through nginx a 200 MiB upload reaches the app before the client has
sent it all while Siesta's memory stays flat; an app's early 413 reaches the
client after a bounded part of a 100 MiB body; `wsgi.url_scheme` follows the
`X-Forwarded-Proto` nginx sets, never a direct client's; through HAProxy
(PROXY v2) and nginx `stream` (PROXY v1) `REMOTE_ADDR` is the original
client, and a direct connection without a preamble is refused. Proxies are
started and stopped by front_proxies.py; the rolling deploy is in
test_rolling_deploy.py.
"""

import json
import select

import deploy_doc
import front_proxies
import payloads
import pytest
import rawhttp
from test_memory_flat import tree_rss_kib

MIB = payloads.MIB
APP = "proxy_app:app"


def http_via(port, method, target, headers=(), body=b"", source="127.0.0.1"):
    """One request on a fresh connection from `source`; the parsed response."""
    with rawhttp.Connection("127.0.0.1", port, source=source) as conn:
        conn.send(rawhttp.build_request(method, target, headers, body))
        return conn.read_response(method)


def nginx_tcp(tmp_path, siesta, bind=None):
    """deploy.md's nginx site, its upstream the Siesta on TCP (nginx connecting from `bind`)."""
    site = deploy_doc.nginx_site(
        deploy_doc.config("nginx-tcp"), f"{siesta.host}:{siesta.port}", proxy_bind=bind
    )
    return front_proxies.nginx(tmp_path / "nginx", http=site)


@pytest.fixture
def stop_after():
    """Proxies the test started, stopped by PID after it."""
    started = []
    yield started.append
    for proxy in started:
        proxy.stop()


@pytest.mark.slow
def test_upload_streams_through_nginx(start_server, tmp_path, stop_after):
    siesta = start_server(APP, "--threads", "2")
    proxy = nginx_tcp(tmp_path, siesta)
    stop_after(proxy)
    total = 200 * MIB
    token = rawhttp.new_token()
    # Warm up, so buffers and pools are at their steady size before the baseline.
    warm = http_via(proxy.port, "POST", "/upload?token=warm", body=b"w" * (4 * MIB))
    assert warm.status == 200, warm
    baseline = tree_rss_kib(siesta.proc.pid)
    samples = []
    with rawhttp.Connection("127.0.0.1", proxy.port, timeout=60) as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/upload?token={token}", [("Content-Length", str(total))]
            )
        )
        pieces = payloads.pieces(total)
        conn.send(next(pieces))
        # Gate: the app must have its first bytes while 199 MiB are still
        # unsent; a proxy that buffers the body would make this wait fail.
        first = siesta.wait_records(f"upload-{token}", timeout=15)
        assert first == ["first"], "the app did not see the body before the client finished"
        for i, piece in enumerate(pieces):
            conn.send(piece)
            if i % 16 == 0:
                samples.append(tree_rss_kib(siesta.proc.pid))
        resp = conn.read_response()
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {"size": total, "sha256": payloads.digest(total)}
    growth_kib = max(samples) - baseline
    assert growth_kib < 32 * 1024, f"Siesta grew {growth_kib} KiB during a 200 MiB upload"


def test_early_413_reaches_the_client_through_nginx(start_server, tmp_path, stop_after):
    siesta = start_server(APP)
    proxy = nginx_tcp(tmp_path, siesta)
    stop_after(proxy)
    total = 100 * MIB
    sent = 0
    with rawhttp.Connection("127.0.0.1", proxy.port, timeout=30) as conn:
        conn.send(rawhttp.build_request("POST", "/reject", [("Content-Length", str(total))]))
        piece = b"r" * (64 * 1024)
        # Send until the answer shows up (each wait bounded), never past the body.
        while sent < total:
            readable, _, _ = select.select([conn.sock], [], [], 0.005)
            if readable:
                break
            try:
                conn.send(piece)
            except OSError:
                break  # closed on us: the answer is waiting
            sent += len(piece)
        resp = conn.read_response()
    assert resp.status == 413, resp
    assert sent < 8 * MIB, f"the client had to send {sent} bytes before the 413"


def test_scheme_from_nginx_not_from_a_direct_client(start_server, tmp_path, stop_after):
    # nginx connects from 127.0.0.2 (proxy_bind), and only that is trusted.
    siesta = start_server(APP, "--forwarded-allow-ips", "127.0.0.2")
    proxy = nginx_tcp(tmp_path, siesta, bind="127.0.0.2")
    stop_after(proxy)
    via = http_via(proxy.port, "GET", "/env", [("X-Forwarded-Proto", "http")])
    env = json.loads(via.body)["environ"]
    assert env["wsgi.url_scheme"] == "https", "nginx's X-Forwarded-Proto replaces the client's"
    assert env["REMOTE_ADDR"] == "127.0.0.2"  # the peer, as in gunicorn
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    direct = siesta.request("GET", "/env", [("X-Forwarded-Proto", "https")])
    assert json.loads(direct.body)["environ"]["wsgi.url_scheme"] == "http"


def test_nginx_unix_socket_upstream(start_server, tmp_path, stop_after):
    sock = tmp_path / "siesta.sock"
    siesta = start_server(APP, "--bind", f"unix:{sock}")
    site = deploy_doc.nginx_site(deploy_doc.config("nginx-tcp"), f"unix:{sock}")
    proxy = front_proxies.nginx(tmp_path / "nginx", http=site)
    stop_after(proxy)
    env = json.loads(http_via(proxy.port, "GET", "/env").body)["environ"]
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == ""  # a unix socket peer has no address
    body = payloads.pieces(8 * MIB)
    resp = http_via(proxy.port, "POST", "/upload?token=unix", body=b"".join(body))
    assert json.loads(resp.body)["size"] == 8 * MIB
    assert siesta.alive()


def check_proxy_protocol(siesta, proxy):
    """REMOTE_ADDR is the client the proxy saw, and its own X-Forwarded-Proto
    does not make the scheme https (Siesta runs with --forwarded-allow-ips '',
    as docs/deploy.md says); a direct connection is refused."""
    resp = http_via(
        proxy.port, "GET", "/env", source="127.0.0.3", headers=[("X-Forwarded-Proto", "https")]
    )
    assert resp.status == 200, (resp, proxy.log())
    env = json.loads(resp.body)["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.3"
    assert env["wsgi.url_scheme"] == "http", env
    with siesta.connect() as direct:
        direct.send(rawhttp.build_request("GET", "/env"))
        assert direct.read_to_eof() == b"", "a direct client without a preamble was answered"
    assert siesta.wait_log(r"no PROXY protocol header \[proxy_protocol\]")
    resp = http_via(
        proxy.port, "POST", "/upload?token=pp", body=b"p" * (3 * MIB), source="127.0.0.3"
    )
    assert json.loads(resp.body)["size"] == 3 * MIB


def test_haproxy_send_proxy_v2(start_server, tmp_path, stop_after, mode):
    siesta = start_server(APP, "--proxy-protocol", "v2", "--forwarded-allow-ips", "", mode=mode)
    config = deploy_doc.haproxy(deploy_doc.config("haproxy"), f"{siesta.host}:{siesta.port}")
    proxy = front_proxies.haproxy(tmp_path / "haproxy", config)
    stop_after(proxy)
    check_proxy_protocol(siesta, proxy)


def test_nginx_stream_proxy_protocol_v1(start_server, tmp_path, stop_after, mode):
    siesta = start_server(APP, "--proxy-protocol", "v1", "--forwarded-allow-ips", "", mode=mode)
    stream = deploy_doc.nginx_stream(
        deploy_doc.config("nginx-stream"), f"{siesta.host}:{siesta.port}"
    )
    proxy = front_proxies.nginx(tmp_path / "nginx", main=stream)
    stop_after(proxy)
    check_proxy_protocol(siesta, proxy)
