"""Read-ahead of a parked read (issue #16): the server takes from the socket what
the app's pending read needs plus its own bounded buffers, not what the client
could send.

The app reads 10 bytes of a large body, then holds without reading. The client
sends without blocking until the connection takes nothing more for a second,
and counts what it sent. Beyond the server's read-ahead, the rest sits in the
two kernel socket buffers: the client's send buffer (fixed small here) and the
server's receive buffer (at most `tcp_rmem`'s maximum). So the count must stay
under their sum plus a bound for Siesta's own buffers, which is far less than
the body: a server that read the body to the end would send it all.

A pending read also holds no more memory than the bytes it has received:
each chunk hyper hands over is a slice of a read buffer of at least 8 KiB,
so a client sending one byte per packet must not make the server keep one
such buffer per byte.
"""

import json
import select
import socket
import time

import pytest
import rawhttp
from siesta_process import tree_rss_kib

MIB = 1024 * 1024
# hyper's read buffer and the frame in its channel (64 KiB each), what
# wsgi.input buffered for the pending read: well under this.
SIESTA_BOUND = 1 * MIB
SNDBUF = 64 * 1024


def rmem_max():
    with open("/proc/sys/net/ipv4/tcp_rmem") as f:
        return int(f.read().split()[2])


def send_until_stalled(sock, total, block):
    """Non-blocking sends until `total` bytes went or a second passed without progress."""
    sent = 0
    sock.setblocking(False)
    while sent < total:
        _, writable, _ = select.select([], [sock], [], 1.0)
        if not writable:
            break
        try:
            sent += sock.send(block[: min(len(block), total - sent)])
        except BlockingIOError:
            continue
    sock.settimeout(30)
    return sent


@pytest.mark.timeout(120)
@pytest.mark.parametrize("first", ["small", "large"])
def test_parked_read_does_not_read_ahead(server, first):
    """The app's first read takes 10 bytes, or more than the bound (a read that
    parks and is answered must not leave the server reading on for it); then the
    app holds, and what the server still takes from the socket is its read-ahead."""
    tok = rawhttp.new_token()
    go = f"go-{tok}"
    with server.connect(timeout=30) as conn:
        sock = conn.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        kernel = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + rmem_max()
        allowed = kernel + SIESTA_BOUND
        n = 10 if first == "small" else allowed + 8 * MIB
        total = n + 3 * allowed
        head = rawhttp.build_request(
            "POST", f"/read-hold?n={n}&go={go}&token={tok}", [("Content-Length", str(total))]
        )
        sock.sendall(head)
        block = b"z" * (256 * 1024)
        for offset in range(0, n, len(block)):
            sock.sendall(block[: min(len(block), n - offset)])
        held = server.wait_records(f"held-{tok}")
        assert held == [f"read {n}"], server.log()
        sent = send_until_stalled(sock, total - n, block)
        assert sent < allowed, f"sent {sent} after the read, kernel buffers {kernel}"
        (server.record_dir / go).write_text("go\n")
        resp = conn.read_response()
    assert resp.status == 200
    assert json.loads(resp.body) == {"read": n, "released": True}
    server.assert_serving()


@pytest.mark.timeout(120)
def test_a_failed_read_leaves_no_read_ahead(start_server, mode):
    """Issue 16 review: a read that ended in an error (here --body-timeout) left
    its pump with hyper, which then read the whole body on for it while the app
    held. After the failure the server must take no more than its bound."""
    srv = start_server("router_app:app", "--body-timeout", "1", mode=mode)
    tok = rawhttp.new_token()
    go = f"go-{tok}"
    with srv.connect(timeout=30) as conn:
        sock = conn.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        allowed = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + rmem_max() + SIESTA_BOUND
        total = 10 + 3 * allowed
        head = rawhttp.build_request(
            "POST", f"/fail-hold?go={go}&token={tok}", [("Content-Length", str(total))]
        )
        sock.sendall(head + b"z" * 10)
        held = srv.wait_records(f"held-{tok}", timeout=20)
        assert held == ["failed ClientTimeout"], srv.log()
        sent = send_until_stalled(sock, total - 10, b"z" * (256 * 1024))
        assert sent < allowed, f"sent {sent} after the failed read, bound {allowed}"
        (srv.record_dir / go).write_text("go\n")
        resp = conn.read_response()
    assert resp.status == 200
    assert json.loads(resp.body) == {"failed": "ClientTimeout", "released": True}


@pytest.mark.timeout(120)
def test_a_trickled_read_holds_only_what_it_received(server):
    """Issue 16: each chunk of a pending read kept hyper's whole 8 KiB read buffer
    alive. Three uploads send one byte per packet into a pending `read(65536)`:
    kept as slices, the 12,000 bytes would hold a read buffer each (48 MiB of
    RSS on the old build); copied out, they are 12 KB."""
    conns, count = 3, 4000
    assert server.get("/ping").status == 200
    opened = []
    try:
        toks = []
        for _ in range(conns):
            conn = server.connect(timeout=30)
            opened.append(conn)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tok = rawhttp.new_token()
            toks.append(tok)
            conn.send(
                rawhttp.build_request(
                    "POST",
                    f"/read-hold?n=65536&go=go-{tok}&token={tok}",
                    [("Content-Length", "65536")],
                )
            )
        baseline = tree_rss_kib(server.proc.pid)
        for _ in range(count):
            for conn in opened:
                conn.send(b"x")
            time.sleep(0.001)  # pacing: one packet per byte, not readiness
        growth = tree_rss_kib(server.proc.pid) - baseline
        assert growth < 8 * 1024, f"RSS grew by {growth} KiB for {conns * count} bytes"
        for conn, tok in zip(opened, toks, strict=True):
            conn.send(b"y" * (65536 - count))
            assert server.wait_records(f"held-{tok}") == ["read 65536"]
            (server.record_dir / f"go-{tok}").write_text("go\n")
            resp = conn.read_response()
            assert resp.status == 200
            assert json.loads(resp.body) == {"read": 65536, "released": True}
    finally:
        for conn in opened:
            conn.close()
    server.assert_serving()
