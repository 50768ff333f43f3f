"""Regression tests for the review of the first milestone: each names what broke.

Each test starts its own server (the options matter) and asserts ordering and
completeness, never timings.
"""

import math
import os
import signal
import socket
import time

import rawhttp
from siesta_process import running, wait_until

APP = "regress_app:app"


def _small_window(srv, rcvbuf):
    """A connection to `srv` whose receive buffer holds about `rcvbuf` bytes."""
    return rawhttp.small_window(srv.host, srv.port, rcvbuf)


def _answer(srv, raw):
    """The response to the bytes `raw`, sent on a fresh connection."""
    with srv.connect() as conn:
        conn.send(raw)
        return conn.read_response()


def test_readline_zero_neither_waits_nor_sends_100_continue(start_server, mode):
    """readline(0) on an unread body blocked for a body byte and sent 100 Continue."""
    srv = start_server(APP, mode=mode)
    resp = _answer(
        srv,
        b"POST /readline0 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    assert resp.status == 413 and resp.body == b"got 0", resp
    assert not resp.interim, "no 100 Continue may be sent for readline(0)"


def test_thread_locals_do_not_carry_over_between_requests(start_server):
    """gevent mode reused greenlets, so request N saw request N-1's threading.local.

    (Thread mode reuses its threads, like every WSGI thread pool.)
    """
    srv = start_server(APP, mode="gevent")
    seen = [srv.get(f"/local?value={v}").body for v in ("a", "b", "c")]
    assert seen == [b"None", b"None", b"None"]


def test_a_stray_timeout_after_a_request_does_not_wedge_the_worker(start_server):
    """A gevent.Timeout left running by the app hit a reused greenlet: later requests hung."""
    srv = start_server(APP, "--worker-connections", "1", mode="gevent")
    assert srv.get("/timeout").body == b"ok"
    time.sleep(0.5)  # let the app's stray timer fire (not readiness)
    for _ in range(3):
        resp = srv.get("/ping")
        assert resp.status == 200 and resp.body == b"pong", resp


def test_finished_response_is_sent_while_the_only_thread_runs_another(start_server):
    """With every pool thread in the app nobody drove I/O: a finished reply waited.

    /ping is queued before the second slow request; the one thread answers
    /ping, then runs the second: /ping's reply must not wait for it.
    """
    srv = start_server(APP, "--threads", "1", mode="thread")
    with srv.connect() as first, srv.connect() as fast, srv.connect() as second:
        first.send(b"GET /slow?name=first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert srv.wait_records("slow", 1) == ["start first"]
        fast.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # orders /ping's arrival before the second request (not readiness)
        second.send(b"GET /slow?name=second HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first.read_response().body == b"slow"
        assert fast.read_response().body == b"pong"
        assert "end second" not in srv.records("slow"), srv.records("slow")
        assert second.read_response().body == b"slow"


def test_a_client_that_stops_reading_is_given_up(start_server, mode):
    """A reader that never reads held the (only) thread or greenlet slot forever."""
    srv = start_server(
        APP, "--threads", "1", "--worker-connections", "1", "--body-timeout", "1", mode=mode
    )
    stalled = _small_window(srv, 4096)
    try:
        stalled.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = srv.get("/ping")  # served once the stalled response is given up
        assert resp.status == 200 and resp.body == b"pong", resp
    finally:
        stalled.close()


def test_a_given_up_response_lets_go_of_its_connection(start_server, mode, tmp_path):
    """A response given up after --body-timeout kept its connection, and so its
    request, open until the client read again: hyper held the unsent bytes and
    never looked at the body's abort. The request never ended (no access log
    line, a status page row sending forever) for a client that never reads."""
    log = tmp_path / "access.log"
    srv = start_server(APP, "--body-timeout", "1", "--access-logfile", str(log), mode=mode)
    stalled = _small_window(srv, 4096)
    try:
        stalled.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")

        def ended():
            return log.exists() and "/big" in log.read_text("utf-8", "replace")

        assert wait_until(ended, timeout=20.0), "the given-up request never ended"
        assert srv.get("/ping").body == b"pong"

        # The client is told, by a reset: a FIN would wait behind the bytes
        # it does not take, and leave it believing the response still comes.
        def told():
            state = stalled.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            return state != 1  # TCP_ESTABLISHED

        assert wait_until(told, timeout=10.0), "the client was never told"
    finally:
        stalled.close()
    # The error log says why the response was cut, once (the access log has
    # only the app's 200 and the bytes handed over).
    cut = (
        r"Response to GET /big for 127\.0\.0\.1:\d+ cut after \d+ body bytes: "
        r"the client took no byte of it within --body-timeout"
    )
    assert srv.wait_log(cut), srv.log()
    assert srv.get("/ping").body == b"pong"
    assert srv.log().count("within --body-timeout") == 1, srv.log()


def test_a_given_up_write_is_told_once(start_server, mode, tmp_path):
    """An app writing with `write()` to a client given up for --body-timeout
    got, beside the cut's own line, `Client went away while the app wrote
    ...`, which blamed the client for the server's cut."""
    log = tmp_path / "access.log"
    srv = start_server(APP, "--body-timeout", "1", "--access-logfile", str(log), mode=mode)
    stalled = _small_window(srv, 4096)
    try:
        stalled.sendall(b"GET /big-write HTTP/1.1\r\nHost: x\r\n\r\n")
        cut = r"Response to GET /big-write for .* within --body-timeout"
        assert srv.wait_log(cut, timeout=20.0), srv.log()
    finally:
        stalled.close()
    # The request has ended (the app is done writing) once it is logged.
    assert wait_until(lambda: log.exists() and "/big-write" in log.read_text("utf-8", "replace"))
    assert srv.get("/ping").body == b"pong"
    assert srv.log().count("within --body-timeout") == 1, srv.log()
    assert "Client went away" not in srv.log(), srv.log()


def test_a_client_that_never_reads_a_finished_response_is_let_go(start_server, mode):
    """With the whole response handed to the server at once the app is done
    and nothing waits on the client, so nothing timed it: a client that never
    read held its connection, and what the server buffered for it, for good.
    Now a client that takes no byte for --body-timeout loses its connection:
    reading afterwards, it gets what was already in flight, then the end."""
    srv = start_server(APP, "--body-timeout", "1", mode=mode)
    size = 32 << 20
    stalled = _small_window(srv, 4096)
    try:
        stalled.sendall(b"GET /whole?mib=32 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(4)  # takes nothing for four times --body-timeout
        got = 0
        while True:
            try:
                chunk = stalled.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        assert got < size, f"the whole {size} bytes came: the connection was kept"
    finally:
        stalled.close()
    assert srv.get("/ping").body == b"pong"
    # Handed over whole, the response waited in the connection's buffers:
    # its cut is told by the connection, once.
    cut = (
        r"A response for 127\.0\.0\.1:\d+ cut: "
        r"the client took no byte of it within --body-timeout"
    )
    assert srv.wait_log(cut), srv.log()
    assert srv.log().count("within --body-timeout") == 1, srv.log()


def test_a_slow_but_steady_reader_is_not_let_go(start_server, mode):
    """The write timer counts what the client takes, not which writes go
    through: the kernel calls a full socket writable again only once a good
    part of its buffer has drained, which a slow reader takes longer than
    --body-timeout to do. Reading about 80 KB/s for three times the timeout,
    then fast, the client gets the whole body."""
    srv = start_server(APP, "--body-timeout", "1", mode=mode)
    size = 8 << 20
    client = _small_window(srv, 16384)
    try:
        client.sendall(b"GET /whole?mib=8 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        slow_until = time.monotonic() + 3
        while time.monotonic() < slow_until:
            got += client.recv(4096)
            time.sleep(0.05)
        while b"\r\n\r\n" not in got:
            got += client.recv(1 << 16)
        head, _, body = got.partition(b"\r\n\r\n")
        left = size - len(body)
        while left > 0:
            chunk = client.recv(min(left, 1 << 20))
            assert chunk, f"the connection ended {left} bytes short"
            left -= len(chunk)
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        client.close()
    assert srv.get("/ping").body == b"pong"
    assert "within --body-timeout" not in srv.log(), srv.log()


def test_a_slow_but_steady_reader_of_a_stream_is_not_let_go(start_server, mode):
    """The app's side of --body-timeout (a stream waiting for room) counted
    only the chunks taken from its queue, which are taken only when the
    socket has room again, so a client reading slowly but steadily was
    given up and got its response cut short (a reset). The socket's side
    judges such a client by what it takes. Reading about 80 KB/s for three
    times the timeout, then fast, an HTTP/1.0 client (the close ends the
    body) gets the whole stream, then a clean end."""
    srv = start_server(APP, "--body-timeout", "1", mode=mode)
    client = _small_window(srv, 16384)
    try:
        client.sendall(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
        got, reset = rawhttp.read_to_end(client, slow_for=3, pace=0.05)
    finally:
        client.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    assert not reset, f"reset after {len(body)} body bytes"
    assert len(body) == 2000 * 65536, f"{2000 * 65536 - len(body)} bytes short"
    assert "within --body-timeout" not in srv.log(), srv.log()


def test_a_response_cut_off_by_a_stop_ends_in_a_reset(start_server, mode):
    """A response still going out when a stop's --graceful-timeout ran out
    ended with a plain close: an HTTP/1.0 client, whose body ends at the
    close, took the cut response for complete. It now ends in a reset."""
    srv = start_server(APP, "--graceful-timeout", "1", mode=mode)
    client = _small_window(srv, 16384)
    try:
        client.sendall(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
        client.recv(4096)  # under way
        srv.proc.send_signal(signal.SIGTERM)
        # About 200 KB/s: far slower than the stop.
        got, reset = rawhttp.read_to_end(client, slow_for=math.inf)
    finally:
        client.close()
    assert len(got) < 2000 * 65536, "the whole body came before the stop's time was up"
    assert reset, f"a plain end after {len(got)} bytes: the cut passed for complete"


def test_a_stop_resets_a_response_whose_socket_a_forked_child_holds(start_server, mode):
    """When a stop's time was up, a response still going out waited for its
    client before its reset, and the worker's exit sent nothing while a
    process the app forked held a copy of the socket: the client waited for
    that child. The reset now goes out at once, while the child still runs."""
    srv = start_server(APP, "--graceful-timeout", "1", mode=mode)
    name = "fork-" + rawhttp.new_token()
    client = _small_window(srv, 16384)
    pid = None
    try:
        client.sendall(f"GET /fork-big?name={name} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        client.recv(4096)  # under way
        pid = int(srv.wait_records(name)[0])
        srv.proc.send_signal(signal.SIGTERM)
        got, reset = rawhttp.read_to_end(client, slow_for=math.inf)
        child_ran = running(pid)
    finally:
        client.close()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert reset, f"a plain end after {len(got)} bytes"
    assert child_ran, "the connection ended only when the child did"


def test_timeouts_too_long_to_count_mean_forever(start_server, mode):
    """`--keep-alive 1e19` (or any timeout past what a clock can add) panicked
    in the worker at the first request or at TERM: the request got no reply,
    and the stop exited 1. Such values now wait as if forever."""
    huge = "1e19"
    srv = start_server(
        APP,
        *("--keep-alive", huge, "--header-timeout", huge, "--body-timeout", huge),
        *("--graceful-timeout", huge, "--queue-timeout", huge, "--timeout", "inf"),
        mode=mode,
    )
    with srv.connect() as conn:
        for _ in range(2):
            conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = conn.read_response()
            assert resp.status == 200 and resp.body == b"pong", resp
    assert srv.stop() == 0, srv.log()
    assert "panic" not in srv.log(), srv.log()


def test_a_child_the_app_forks_never_serves(start_server, mode):
    """QA probe (session 24): a child the app forked that returned into the
    server (here by SystemExit; a plain return is the same) ran the worker's
    code with half a worker: in thread mode it served requests on the shared
    socket, ignored TERM and outlived the server, and its parent died of a
    fault in the I/O runtime; in gevent mode its hub took the parent's
    wake-ups and the parent answered nothing, for good. Now the child leaves
    with one line, at once, and the worker serves on."""
    srv = start_server(APP, mode=mode)
    name = "forked-" + rawhttp.new_token()
    first = srv.get(f"/fork-return?name={name}&code=7")
    assert first.status == 200, first
    worker = int(first.body)
    (child,) = srv.wait_records(name)
    assert srv.wait_log(
        rf"A process the app forked \(pid {child}\) returned into the server: it exits \(7\)"
    ), srv.log()
    assert wait_until(lambda: not running(int(child))), f"child {child} still runs"
    for i in range(20):
        resp = srv.get(f"/ping?n={i}")
        assert (resp.status, resp.body) == (200, b"pong"), resp
    assert int(srv.get(f"/fork-return?name={name}-again").body) == worker, "the worker changed"
    assert "Error handling request" not in srv.log(), srv.log()


def test_a_child_the_app_forks_does_not_hold_the_port(start_server, mode):
    """QA probe (session 24): a child the app forked kept the worker's listening
    socket: after the server stopped, connections to its port hung, and a new
    server could not bind it while the child lived."""
    srv = start_server(APP, mode=mode)
    name = "linger-" + rawhttp.new_token()
    assert srv.get(f"/fork-linger?name={name}").status == 200
    (child,) = srv.wait_records(name)
    try:
        assert running(int(child))
        srv.proc.send_signal(signal.SIGTERM)  # not stop(): the child holds its log pipes
        assert srv.proc.wait(20) == 0
        with socket.socket() as probe:
            probe.settimeout(5)
            try:
                probe.connect((srv.host, srv.port))
                refused = False
            except ConnectionRefusedError:
                refused = True
        assert refused, "the app's child still listens on the server's port"
        assert running(int(child)), "the child was to live on"
    finally:
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_worker_whose_listening_socket_broke_is_replaced(start_server, mode):
    """QA probe (session 24): an app that closed its worker's listening socket
    left the worker retrying accept() on it for good ("Accept failed: ...;
    retrying"), answering nothing, while its heartbeat kept it alive. Such an
    error now ends the worker, and its replacement serves on the master's
    socket."""
    srv = start_server(APP, mode=mode)
    old = int(srv.get("/close-listening").body)
    # A next connection finds the socket broken; the replacement answers.
    assert wait_until(lambda: int(srv.get("/pid").body) != old, timeout=10), srv.log()
    assert srv.wait_log(r"Listening socket failed: .*the worker exits to be replaced"), srv.log()
    assert "Accept failed" not in srv.log(), srv.log()


def test_a_fast_stop_cuts_a_graceful_one_short(start_server, mode):
    """QA probe (session 24): INT (or QUIT) after a TERM reached the workers
    ("Handling signal: quit"), but they went on draining until the master
    killed them with SIGKILL, and a close-delimited response cut that way
    ended in a clean close, as if complete. The fast stop now cuts the drain
    short: the worker exits by itself and the cut response ends in a reset."""
    srv = start_server(APP, "--graceful-timeout", "60", mode=mode)
    client = _small_window(srv, 16384)
    try:
        client.sendall(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
        client.recv(4096)  # under way, and far from done at this pace
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait_log(r"Handling signal: term"), srv.log()
        srv.proc.send_signal(signal.SIGINT)
        got, reset = rawhttp.read_to_end(client, slow_for=math.inf)
    finally:
        client.close()
    assert srv.proc.wait(20) == 0, srv.log()
    assert reset, f"a plain end after {len(got)} bytes: the cut passed for complete"
    assert "SIGKILL" not in srv.log() and "was killed" not in srv.log(), srv.log()


def _address_space_4_gib():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_a_worker_that_cannot_start_every_thread_serves_with_those_it_has(start_server):
    """QA probe (session 24): a thread-mode worker that could not start all its
    --threads (a pids or memory limit) crashed with a traceback, and the master
    started another, which crashed the same way, hundreds of times a second.
    It now serves with the threads it got, and says so in one line."""
    srv = start_server(
        "big_stack_app:app", "--threads", "8", mode="thread", preexec=_address_space_4_gib
    )
    assert srv.wait_log(r"\[WARNING\] Serving with \d of --threads 8 threads"), srv.log()
    for _ in range(5):
        resp = srv.get("/")
        assert (resp.status, resp.body) == (200, b"pong"), resp
    assert "Traceback" not in srv.log() and "Booting worker" in srv.log(), srv.log()
    assert srv.log().count("Booting worker") == 1, srv.log()


def test_a_fork_after_a_listeners_number_was_reused_keeps_that_file(start_server, mode):
    """Review (session 24): the at-fork handler put /dev/null in the place of
    every listening socket's number it had recorded, also once that socket was
    closed (a stop's drain, the app) and the number reused: a socketpair the
    app then made was /dev/null in its forked child."""
    srv = start_server(APP, mode=mode)
    resp = srv.get("/close-then-fork")
    assert (resp.status, resp.body) == (200, b"hello from child"), resp


def test_the_iterables_close_may_read_the_request_body(start_server, mode):
    """QA (session 30): an iterable's close() that read wsgi.input got
    ClientDisconnected ("request body abandoned"): the unread body was given
    to the drain when the response ended, before close(). gunicorn hands it
    the bytes, and so does Siesta now; the connection then serves on."""
    srv = start_server(APP, mode=mode)
    with srv.connect() as conn:
        conn.send(
            b"POST /read-in-close?name=rc HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
            b"hello world"
        )
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, b"answered"), resp
        assert srv.wait_records("rc") == ["read b'hello world'"], srv.log()
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"pong"
    # Review (session 31): also when the iteration failed (a 500).
    resp = _answer(
        srv,
        b"POST /read-in-close?name=rf&fail=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert resp.status == 500
    assert srv.wait_records("rf") == ["read b'hello'"], srv.log()


def test_a_body_read_in_close_cut_by_keep_alive_says_so(start_server, mode):
    """Review (session 32): a body read in the iterable's close() that was still
    incomplete when --keep-alive closed the connection (as it closes any idle one
    once the response is sent) raised ClientDisconnected "client disconnected
    before the request body was complete", with the client still connected. It
    names --keep-alive now; a client that does leave is still told as gone."""
    srv = start_server(APP, "--keep-alive", "1", mode=mode)
    with srv.connect() as conn:
        conn.send(
            b"POST /read-in-close?name=ka HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabcd"
        )
        assert conn.read_response().body == b"answered"
        got = srv.wait_records("ka")
        assert got and got[0].startswith("raised ClientDisconnected: "), got
        assert "--keep-alive closed the connection" in got[0], got
        assert conn.wait_closed()
    with srv.connect() as conn:
        conn.send(
            b"POST /read-in-close?name=gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabcd"
        )
        assert conn.read_response().body == b"answered"
    got = srv.wait_records("gone")
    assert got == [
        "raised ClientDisconnected: client disconnected before the request body was complete"
    ], got
