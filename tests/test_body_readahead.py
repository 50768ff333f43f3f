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
"""

import json
import select
import socket

import pytest
import rawhttp

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
