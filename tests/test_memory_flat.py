"""Server memory stays flat while large bodies stream in either direction.

Upload: the client streams 1 GiB in 1 MiB pieces from a generator (never held
whole) to an app that reads 64 KiB at a time.  Download: the app yields 256 MiB
while the client stops reading for a while, so only backpressure can keep the
server from buffering it.  The resident memory (VmRSS) of the server's process
tree is sampled from /proc and may not grow by 64 MiB or more; and 1 GiB of
fresh 64 KiB objects, each handed to the socket without a copy (issue 16),
must leave it within a few MiB.
"""

import json
import socket
import time

import payloads
import pytest
import rawhttp
from siesta_process import tree_rss_kib, wait_until

GROWTH_LIMIT_KIB = 64 * 1024


def upload(server, total, samples=None, every=32):
    with server.connect(timeout=60) as conn:
        conn.send(
            rawhttp.build_request(
                "POST", "/sha256?chunk=65536&hash=0", [("Content-Length", str(total))]
            )
        )
        for i, piece in enumerate(payloads.pieces(total)):
            conn.send(piece)
            if samples is not None and i % every == 0:
                samples.append(tree_rss_kib(server.proc.pid))
        return conn.read_response()


@pytest.mark.slow
def test_1gib_upload_keeps_memory_flat(server):
    warm = upload(server, 16 * payloads.MIB)  # let buffers and pools reach steady size
    assert warm.status == 200
    baseline = tree_rss_kib(server.proc.pid)
    assert baseline > 0
    samples = []
    total = 1 << 30
    resp = upload(server, total, samples)
    samples.append(tree_rss_kib(server.proc.pid))
    assert resp.status == 200, resp
    assert json.loads(resp.body)["size"] == total
    growth = max(samples) - baseline
    assert len(samples) >= 32
    assert growth < GROWTH_LIMIT_KIB, (
        f"RSS grew by {growth} KiB (baseline {baseline} KiB, samples {samples})"
    )


@pytest.mark.slow
def test_slow_reader_of_256mib_response_keeps_memory_flat(server):
    count, size = 4096, 65536
    warm = server.get("/stream?count=64&size=65536")
    assert warm.status == 200 and len(warm.body) == 64 * size
    baseline = tree_rss_kib(server.proc.pid)
    samples = []
    with server.connect(timeout=60) as conn:
        conn.send(rawhttp.build_request("GET", f"/stream?count={count}&size={size}"))
        _, _, status, _, _ = conn.read_head()
        assert status == 200
        # Not reading for a second: an unbounded server would buffer the whole body now.
        for _ in range(10):
            time.sleep(0.1)
            samples.append(tree_rss_kib(server.proc.pid))
        received = 0
        while True:
            data = conn.read_chunk()
            assert data is not None, "response ended without its terminator"
            if not data:
                break
            received += len(data)
    samples.append(tree_rss_kib(server.proc.pid))
    assert received == count * size
    growth = max(samples) - baseline
    assert growth < GROWTH_LIMIT_KIB, (
        f"RSS grew by {growth} KiB (baseline {baseline} KiB, samples {samples})"
    )


def test_a_slow_reader_of_a_long_list_response_keeps_memory_flat(server):
    """QA probe (session 23): a list of two million 100-byte items (one object
    repeated: 16 MB of list in the app) was joined into one 200 MB buffer in
    the server, held until the slow client took it. A long list now goes out
    item by item, with backpressure."""
    n = 2_000_000
    assert server.get("/framing/list-repeated?n=1000").status == 200
    baseline = tree_rss_kib(server.proc.pid)
    samples = []
    with server.connect(timeout=60) as conn:
        conn.send(rawhttp.build_request("GET", f"/framing/list-repeated?n={n}"))
        head = conn.read_head()
        assert head[2] == 200
        for _ in range(10):  # not reading for a second
            time.sleep(0.1)
            samples.append(tree_rss_kib(server.proc.pid))
        assert len(conn.read_exact(100 * n)) == 100 * n
    growth = max(samples) - baseline
    assert growth < GROWTH_LIMIT_KIB, (
        f"RSS grew by {growth} KiB (baseline {baseline} KiB, samples {samples})"
    )


@pytest.mark.slow
def test_1gib_response_of_fresh_bytes_stays_within_a_few_mib(server):
    """Issue 16: large body items are handed to the socket without a copy, and the
    references to the ones already sent are released later, on the next call into
    Python; 1 GiB of fresh 64 KiB objects must still leave memory flat."""
    count, size = 16384, 65536
    warm = server.get("/stream?count=256&size=65536")
    assert warm.status == 200
    baseline = tree_rss_kib(server.proc.pid)
    samples = []
    with server.connect(timeout=60) as conn:
        conn.send(rawhttp.build_request("GET", f"/stream?count={count}&size={size}"))
        _, _, status, _, _ = conn.read_head()
        assert status == 200
        received = 0
        while True:
            data = conn.read_chunk()
            assert data is not None, "response ended without its terminator"
            if not data:
                break
            # A sample per 4 MiB, whatever the chunks' sizes (the server sends
            # what it holds at once, several of the app's items per chunk).
            before, received = received, received + len(data)
            if received // (64 * size) > before // (64 * size):
                samples.append(tree_rss_kib(server.proc.pid))
    assert received == count * size
    growth = max(samples) - baseline
    assert len(samples) == count // 64, "one sample per 4 MiB"
    assert growth < 16 * 1024, f"RSS grew by {growth} KiB (baseline {baseline} KiB)"


def test_response_of_an_app_slower_than_its_client_stays_flat(server):
    """Issue 16 review: the `bytes` the socket side has sent are released on the
    next call into Python; an app slower than its client never waits for room,
    so its loop must release them itself, or the whole response stays alive."""
    count, size = 2048, 65536
    assert server.get("/distinct?count=64&size=65536").status == 200
    baseline = tree_rss_kib(server.proc.pid)
    samples = []
    with server.connect(timeout=60) as conn:
        conn.send(rawhttp.build_request("GET", f"/distinct?count={count}&size={size}&pause=0.001"))
        _, _, status, _, _ = conn.read_head()
        assert status == 200
        received = 0
        while received < count * size:
            data = conn.read_some()
            assert data, "response ended early"
            received += len(data)
            if len(samples) < received // (8 * 1024 * 1024):
                samples.append(tree_rss_kib(server.proc.pid))
    growth = max(samples) - baseline
    assert len(samples) >= 10
    assert growth < 16 * 1024, f"RSS grew by {growth} KiB (baseline {baseline} KiB)"


def test_downloads_nobody_reads_keep_a_small_response_queue(start_server):
    """Issue 16 review: gevent mode's response queue grows (256 KiB up to 1 MiB)
    for a client that drains faster than the hub wakes the app; the kernel's
    socket buffers made every client look fast at first, so downloads nobody
    read grew theirs too. Each stalled download holds the queue, the block the
    app is pushing and the app's own buffer: about 445 KiB of RSS with 256 KiB
    queued; 546 to 790 KiB on average when the queues grew."""
    srv = start_server("router_app:app", mode="gevent")
    n = 20
    assert srv.get("/distinct?count=64&size=65536").status == 200
    baseline = tree_rss_kib(srv.proc.pid)
    conns = []
    try:
        for _ in range(n):
            sock = socket.socket()
            conns.append(sock)
            # A small window: the kernel's buffers fill in small steps.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.connect((srv.host, srv.port))
            sock.sendall(rawhttp.build_request("GET", "/distinct?count=4096&size=65536"))

        def settled(samples=[]):  # noqa: B006 - the samples so far, across calls
            samples.append(tree_rss_kib(srv.proc.pid))
            last = samples[-4:]
            started = last[-1] - baseline > n * 256  # each holds a queue's worth at least
            return len(last) == 4 and max(last) - min(last) < 256 and started and last[-1]

        rss = wait_until(settled, timeout=30, interval=0.25)
        assert rss, "RSS kept moving"
    finally:
        for conn in conns:
            conn.close()
    per_download = (rss - baseline) / n
    assert per_download < 500, f"{per_download:.0f} KiB per stalled download"
