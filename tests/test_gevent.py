"""Gevent mode (`-k gevent`): parked greenlets, cooperative app I/O, per-request state.

One worker holds 1000 slow uploads at once (each parked in wsgi.input.read())
and still answers /ping; an app blocked on its own (monkey-patched) socket does
not block others; threading.local is per request; Django with SQLite serves
concurrent writes; --worker-connections caps running requests; a stop refuses
the requests still waiting for a slot, and a request that ends after it does not
start them; and a missing gevent is one plain error line.
wsgi.multithread/multiprocess in gevent mode are checked by
test_environ.test_multithread_flag_is_true_in_both_modes.  The uploaders are driven by
one thread with `selectors`; every socket and wait is bounded.
"""

import hashlib
import json
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

import rawhttp
from observe import metrics_url, status, wait_until
from siesta_process import APPS_DIR, run_siesta, running

UPLOADERS = 1000
PIECE = 1024
ROUNDS = 4  # body = ROUNDS * PIECE bytes per uploader
PAUSE = 0.3
WAIT = 20.0
GEVENT_APPS = "gevent_apps:app"


def raise_nofile(needed):
    """Lift the soft RLIMIT_NOFILE to the hard limit (inherited by the server too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    assert soft == resource.RLIM_INFINITY or soft >= needed, f"RLIMIT_NOFILE {soft} < {needed}"


def uploader_body(index):
    """ROUNDS * PIECE deterministic bytes, different for every uploader."""
    return hashlib.shake_256(f"uploader-{index}".encode()).digest(ROUNDS * PIECE)


def parse_response(data):
    """(status, body) of one Content-Length response in `data`, or None if incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers["content-length"])
    if len(data) < end + 4 + length:
        return None
    return int(lines[0].split(" ")[1]), data[end + 4 : end + 4 + length]


def ping_ok(srv):
    resp = srv.get("/ping")
    return resp.status == 200 and resp.body == b"pong"


def send_all_then_read(srv, targets, method="GET", headers=()):
    """Send every request on its own connection first, then read each response."""
    conns = []
    try:
        for target in targets:
            conn = srv.connect(timeout=WAIT)
            conns.append(conn)
            conn.send(rawhttp.build_request(method, target, headers))
        return [conn.read_response(method) for conn in conns]
    finally:
        for conn in conns:
            conn.close()


class Uploads:
    """UPLOADERS sockets POSTing to /sha256, driven piece by piece from this one thread."""

    def __init__(self, srv):
        self.sel = selectors.DefaultSelector()
        self.socks, self.bodies, self.received = [], [], {}
        self.results = {}
        self.srv = srv

    def start(self):
        """Connect all; each sends its head and first piece."""
        for i in range(UPLOADERS):
            body = uploader_body(i)
            sock = socket.create_connection((self.srv.host, self.srv.port), timeout=WAIT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(sock)
            self.bodies.append(body)
            self.received[i] = b""
            self.sel.register(sock, selectors.EVENT_READ, i)
            head = rawhttp.build_request(
                "POST", f"/sha256/{i}?chunk={PIECE}", [("Content-Length", str(len(body)))]
            )
            sock.sendall(head + body[:PIECE])

    def send_round(self, index):
        for sock, body in zip(self.socks, self.bodies, strict=True):
            sock.sendall(body[index * PIECE : (index + 1) * PIECE])

    def poll(self, timeout):
        """Collect whatever responses arrive within `timeout` (one select call)."""
        for key, _ in self.sel.select(timeout):
            i = key.data
            data = key.fileobj.recv(65536)
            self.received[i] += data
            parsed = parse_response(self.received[i])
            if parsed is not None or not data:
                self.results[i] = parsed
                self.sel.unregister(key.fileobj)

    def collect(self, timeout):
        deadline = time.monotonic() + timeout
        for _ in range(100 * UPLOADERS):
            remaining = deadline - time.monotonic()
            if len(self.results) == UPLOADERS or remaining <= 0:
                break
            self.poll(min(remaining, 1.0))

    def close(self):
        self.sel.close()
        for sock in self.socks:
            sock.close()


def test_thousand_slow_uploaders_do_not_block_pings(start_server):
    raise_nofile(UPLOADERS + 200)
    srv = start_server(
        "router_app:app", "--worker-connections", str(UPLOADERS + 100), mode="gevent"
    )
    uploads = Uploads(srv)
    try:
        uploads.start()
        # Every upload is inside the app (router_app records each path first), parked in read().
        arrived = srv.wait_records("paths", UPLOADERS, timeout=30.0)
        assert len(arrived) == UPLOADERS, f"only {len(arrived)} uploads reached the app"
        checks = []  # (pings answered, uploads completed at that moment)
        for index in range(1, ROUNDS):
            checks.append((sum(ping_ok(srv) for _ in range(3)), len(uploads.results)))
            uploads.poll(PAUSE)  # the pause between pieces; nothing may complete yet
            assert not uploads.results, "uploads answered before their body was complete"
            uploads.send_round(index)
        assert checks == [(3, 0)] * (ROUNDS - 1), checks
        uploads.collect(30.0)
    finally:
        uploads.close()
    assert len(uploads.results) == UPLOADERS, f"{len(uploads.results)} responses"
    bad = []
    for i, parsed in uploads.results.items():
        expected = {"size": ROUNDS * PIECE, "sha256": hashlib.sha256(uploader_body(i)).hexdigest()}
        if parsed is None or parsed[0] != 200 or json.loads(parsed[1]) != expected:
            bad.append((i, parsed))
    assert not bad, f"{len(bad)} wrong uploads, first: {bad[:3]}"
    srv.assert_serving()


class Upstream:
    """A one-shot TCP server: accepts, reads a line, replies only after `release`."""

    REPLY = b"upstream says hi\n"

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.accepted, self.release = threading.Event(), threading.Event()
        self.request = b""
        self.thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(WAIT)
            try:
                for _ in range(100):
                    data = conn.recv(1024)
                    self.request += data
                    if not data or b"\n" in self.request:
                        break
                self.accepted.set()
                if self.release.wait(WAIT):
                    conn.sendall(self.REPLY)
            except OSError:
                pass

    def close(self):
        self.release.set()
        self.listener.close()
        self.thread.join(WAIT)


def test_request_blocked_on_upstream_socket_does_not_block_others(start_server):
    srv = start_server(GEVENT_APPS, mode="gevent")
    upstream = Upstream()
    try:
        with srv.connect(timeout=WAIT) as blocked:
            blocked.send(rawhttp.build_request("GET", f"/upstream?port={upstream.port}"))
            assert upstream.accepted.wait(WAIT), "the app never reached the upstream server"
            assert upstream.request == b"hello upstream\n"
            assert [ping_ok(srv) for _ in range(5)] == [True] * 5
            readable, _, _ = select.select([blocked.sock], [], [], 0)
            assert not readable, "the upstream request finished before the upstream replied"
            upstream.release.set()
            resp = blocked.read_response()
    finally:
        upstream.close()
    assert resp.status == 200, resp
    got = json.loads(resp.body)
    assert got["reply"] == Upstream.REPLY.decode()
    assert got["socket_patched"] is True, got
    assert ping_ok(srv)


def test_input_and_write_used_from_a_thread_pool_thread(start_server):
    """QA probe (session 24): wsgi.input.read() or write() called from one of
    gevent's thread-pool threads, when it had to wait, tried to switch to a
    greenlet of another thread: the hub's dispatch raised, and the worker
    answered nothing, for good (its heartbeat beat on). Such a call now waits
    on its own thread."""
    srv = start_server(GEVENT_APPS, mode="gevent")
    tok = uuid.uuid4().hex[:12]
    size = 64 * 65536  # more than the response queue holds: write() must wait
    with srv.connect(timeout=WAIT) as conn:
        conn.send(
            rawhttp.build_request(
                "POST", f"/pool?token={tok}&size={size}", [("Content-Length", "5")]
            )
        )
        assert srv.wait_records(f"pool-{tok}") == ["called"]
        assert ping_ok(srv), "the hub stopped while a pool thread waited for the body"
        conn.send(b"hello")
        resp = conn.read_response()
    assert resp.status == 200, resp
    assert resp.body == b"<hello>" + b"p" * size
    assert [ping_ok(srv) for _ in range(3)] == [True] * 3
    assert "Error in the hub" not in srv.log(), srv.log()


def test_threading_local_is_per_request(start_server):
    srv = start_server(GEVENT_APPS, mode="gevent")
    group, n = uuid.uuid4().hex[:12], 50
    values = [f"v{i}-{uuid.uuid4().hex[:8]}" for i in range(n)]
    responses = send_all_then_read(srv, [f"/local?value={v}&group={group}&n={n}" for v in values])
    got = [json.loads(r.body) if r.status == 200 else r for r in responses]
    assert all(isinstance(g, dict) and g["all_arrived"] for g in got), got[:3]
    assert [g["value"] for g in got] == values
    assert got[0]["local_class"].startswith("gevent"), got[0]


def test_django_sqlite_concurrent_writes(start_server):
    srv = start_server("django_app:application", mode="gevent")
    n = 20
    responses = send_all_then_read(
        srv, [f"/hits?name=w{i}" for i in range(n)], "POST", [("Content-Length", "0")]
    )
    assert [r.status for r in responses] == [200] * n, [r.body[:200] for r in responses]
    counts = sorted(json.loads(r.body)["count"] for r in responses)
    # Each insert-then-count runs without a greenlet switch in between: counts are 1..n.
    assert counts == list(range(1, n + 1)), counts
    final = srv.get("/hits")
    assert final.status == 200 and json.loads(final.body) == {"count": n}


def test_missing_gevent_is_one_clear_line(tmp_path):
    fake = tmp_path / "gevent"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("No module named gevent (test)")\n')
    result = run_siesta(
        "-k",
        "gevent",
        "--bind",
        "127.0.0.1:0",
        "--chdir",
        str(APPS_DIR),
        "--pythonpath",
        str(APPS_DIR),
        "router_app:app",
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "gevent" in lines[0], result.stderr
    assert "Listening at" not in result.stderr


PATCHING_CONFIG = """\
\"\"\"Written by test_gevent.py: a gunicorn config file that patches at its top.\"\"\"
import gevent.monkey

gevent.monkey.patch_all()
import time

time.sleep(0.01)  # the hub runs: gevent's os.close of a pipe now waits for its next turn
"""


def test_a_config_file_that_patches_the_standard_library_starts(start_server, tmp_path):
    """QA (session 34): a config file that calls gevent's patch_all(), as many gunicorn
    gevent configs do, hung the master before it bound, silently: its check that gevent
    imports forked with the patched fork and waited for ever (and, once the file had
    used the hub, the patched os.close left the pipe open). The master now forks,
    closes and waits with the C library's calls, whatever patched `os`."""
    conf = tmp_path / "patching.py"
    conf.write_text(PATCHING_CONFIG)
    checked = run_siesta("-k", "gevent", "-c", str(conf), "--check-config", GEVENT_APPS)
    assert checked.returncode == 0, checked.stderr
    srv = start_server(GEVENT_APPS, "-c", str(conf), "-w", "2", mode="gevent")
    srv.assert_serving()
    first = srv.worker_pids()
    os.kill(first[0], signal.SIGKILL)  # the master reaps it and starts another
    assert wait_until(lambda: (p := srv.worker_pids()) and first[0] not in p and len(p) == 2)
    assert srv.get("/ping").body == b"pong"
    # In thread mode the patching reaches the workers' threads, whose requests would
    # hang once they sleep or wait on I/O (review): the start is refused, one line.
    for extra in ([], ["--check-config"]):
        refused = run_siesta("-c", str(conf), *extra, "router_app:app")
        assert refused.returncode == 1, refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "but the worker class is thread" in lines[0], refused.stderr


def test_a_worker_sees_its_apps_children_end_from_the_start(start_server):
    """Flaky regression (session 35): gevent installs its SIGCHLD handler with
    the first child watcher, which its os.fork makes after the fork returns; a
    child that ended before that went unseen, and the app's waitpid() on it
    waited for good (test_a_fork_after_a_listeners_number_was_reused_keeps_that_file
    hung in about two runs of fifteen). gevent's fork now installs the handler
    just before it forks, as gevent's subprocess does; not at the worker's start,
    where it would reap children the app makes without gevent (review)."""
    srv = start_server(GEVENT_APPS, mode="gevent")
    resp = srv.get("/sigchld")
    assert (resp.status, resp.body) == (200, b"before=0 at-fork=1"), resp


def test_worker_connections_caps_running_requests(start_server):
    srv = start_server(GEVENT_APPS, "--worker-connections", "1", mode="gevent")
    go_first, go_second = f"go-{uuid.uuid4().hex[:12]}", f"go-{uuid.uuid4().hex[:12]}"
    (srv.record_dir / go_second).write_text("")  # the second one may finish at once
    with srv.connect(timeout=WAIT) as first, srv.connect(timeout=WAIT) as second:
        first.send(rawhttp.build_request("GET", f"/held?token=first&go={go_first}"))
        assert srv.wait_records("held", 1) == ["start first"]
        second.send(rawhttp.build_request("GET", f"/held?token=second&go={go_second}"))
        readable, _, _ = select.select([second.sock], [], [], 1.0)
        assert not readable, "the second request was served while the only slot was taken"
        assert srv.records("held") == ["start first"]
        (srv.record_dir / go_first).write_text("")
        resp_first, resp_second = first.read_response(), second.read_response()
    assert resp_first.status == 200 and resp_second.status == 200, (resp_first, resp_second)
    got_first, got_second = json.loads(resp_first.body), json.loads(resp_second.body)
    assert got_first["released"] is True and got_second["released"] is True
    assert got_second["max_running"] == 1, got_second
    assert srv.records("held") == ["start first", "end first", "start second", "end second"]


def test_requests_refused_at_a_stop_are_not_started_by_a_request_ending_after_it(start_server):
    # The stop answered the request waiting for the only slot with a 503 but
    # left it in the queue: the running request, ending in the stop's last
    # moment, then started it, and its begin() failed ("Error handling
    # request: RuntimeError('request already begun')").
    srv = start_server(
        GEVENT_APPS,
        "--worker-connections",
        "1",
        "--graceful-timeout",
        "1",
        "--metrics-bind",
        "127.0.0.1:0",
        mode="gevent",
    )
    url = metrics_url(srv)
    go = f"go-{uuid.uuid4().hex[:12]}"
    with srv.connect(timeout=WAIT) as first, srv.connect(timeout=WAIT) as second:
        first.send(rawhttp.build_request("GET", f"/held?token=first&go={go}"))
        assert srv.wait_records("held", 1) == ["start first"]
        second.send(rawhttp.build_request("GET", f"/held?token=second&go={go}"))

        def queued():
            return sorted(r["state"] for r in status(url)["requests"] if r["path"] == "/held")

        assert wait_until(lambda: queued() == ["app", "queued"]), status(url)
        mark = srv.log_mark()
        srv.proc.send_signal(signal.SIGTERM)
        # The hub refuses the waiting request once --graceful-timeout is up;
        # only then may the running one end (within the stop's last moment).
        assert srv.wait_log(r"503 GET /held\?token=second", since=mark, timeout=WAIT), srv.log()
        (srv.record_dir / go).write_text("")
        assert srv.proc.wait(WAIT) == 0
    log = srv.log(mark)
    # The first request ends within the stop's last second (a machine that
    # stalls that long cuts it instead, leaving the check below nothing to
    # catch, rather than failing the test).
    assert srv.records("held")[:1] == ["start first"], log
    assert "Error handling request" not in log and "Traceback" not in log, log


SCHED_OTHER, SCHED_BATCH, SCHED_IDLE = 0, 3, 5


def thread_policies(pid):
    """{thread id: (name, scheduling policy)} of every thread of `pid`, from /proc."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:  # a thread that just ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, int(fields[41 - 3]))  # field 41 of proc(5): policy
    return out


@pytest.mark.parametrize("mode", ["gevent", "thread"])
def test_gevent_hub_and_io_threads_do_not_preempt_each_other(start_server, mode):
    # Gevent mode's hub and I/O threads run SCHED_BATCH, so waking one does
    # not switch out the other (src/worker/sched.rs); thread mode and the
    # master keep the policy they were started with (this process's).
    inherited = os.sched_getscheduler(0)
    if inherited != SCHED_OTHER:
        pytest.skip(f"pytest runs under scheduling policy {inherited}, not the default")
    srv = start_server(GEVENT_APPS, mode=mode)
    srv.assert_serving()
    [worker] = srv.worker_pids()
    threads = thread_policies(worker)
    io = [policy for name, policy in threads.values() if name.startswith("siesta-io")]
    if mode == "gevent":
        assert threads[worker][1] == SCHED_BATCH, threads  # the hub: the main thread
        assert io and set(io) == {SCHED_BATCH}, threads
    else:
        assert {policy for _, policy in threads.values()} == {SCHED_OTHER}, threads
    assert {policy for _, policy in thread_policies(srv.pid).values()} == {SCHED_OTHER}


def test_a_policy_the_deployer_chose_is_kept(start_server):
    # Started under SCHED_IDLE (as `chrt -i 0` or systemd's
    # CPUSchedulingPolicy=idle would), the hub keeps it: Siesta only turns
    # the default policy into SCHED_BATCH. Without CAP_SYS_NICE the kernel
    # refuses to leave SCHED_IDLE anyway, and the test could not tell.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; p = os.sched_param(0); os.sched_setscheduler(0, 5, p); "
            "os.sched_setscheduler(0, 3, p)",
        ],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip("this process may not leave SCHED_IDLE (no CAP_SYS_NICE)")
    srv = start_server(
        GEVENT_APPS,
        mode="gevent",
        preexec=lambda: os.sched_setscheduler(0, SCHED_IDLE, os.sched_param(0)),
    )
    srv.assert_serving()
    [worker] = srv.worker_pids()
    threads = thread_policies(worker)
    assert threads[worker][1] == SCHED_IDLE, threads
    assert SCHED_BATCH not in {policy for _, policy in threads.values()}, threads


def test_a_forked_child_is_not_ended_by_a_copy_of_another_request(start_server):
    """Review (session 24): gevent's fork copies every greenlet into the child;
    the first copy of another request to finish there made the whole child
    leave, in the middle of its own work. Only the forking greenlet's return
    does now."""
    srv = start_server(GEVENT_APPS, mode="gevent")
    name = "gfork-" + uuid.uuid4().hex[:12]
    with srv.connect(timeout=WAIT) as sleeper:
        sleeper.send(rawhttp.build_request("GET", "/gsleep?s=0.5"))
        resp = srv.get(f"/gfork?name={name}&s=1.5")
        assert resp.status == 200, resp
        assert sleeper.read_response().body == b"slept"
    (child,) = srv.wait_records(name, timeout=WAIT)
    assert int(child) == int(resp.body), "the child did not finish its work"
    assert ping_ok(srv)


def test_a_forked_child_whose_forking_greenlet_ended_leaves(start_server):
    """Review (session 24): a child forked from a greenlet the app spawned (not a
    request's) idled on as a copy of the worker when that greenlet ended, and
    outlived the server. It leaves."""
    srv = start_server(GEVENT_APPS, mode="gevent")
    name = "gspawn-" + uuid.uuid4().hex[:12]
    assert srv.get(f"/gspawn-fork?name={name}").status == 200
    (child,) = srv.wait_records(name, timeout=WAIT)
    assert wait_until(lambda: not running(int(child)), timeout=WAIT), f"child {child} lives on"
    assert ping_ok(srv)


def test_a_thread_woken_before_it_parked_does_not_wait():
    """Review (session 24): a gevent thread-pool thread's park registered its
    wake token after Rust armed it; a wake that came in between found nothing
    and was lost, and the read waited out --body-timeout. An early wake is
    kept for the park that follows it."""
    import threading

    _gevent = pytest.importorskip("siesta._gevent")
    token = 987654321
    _gevent._wake(token)  # the hub's wake, before the thread parks
    parked = threading.Thread(target=_gevent._park_thread, args=(token, None), daemon=True)
    parked.start()
    parked.join(WAIT)
    assert not parked.is_alive(), "the early wake was lost"


def test_a_forked_child_starts_none_of_its_parents_queued_requests(start_server):
    """Review 2 (session 24): in a forked child, a copy of another request that
    ended started the requests queued (past --worker-connections) at the fork:
    the app ran them twice, once in the child. The child starts nothing."""
    srv = start_server(GEVENT_APPS, "--worker-connections", "2", mode="gevent")
    name, queued = "gforkq-" + uuid.uuid4().hex[:12], "queued-" + uuid.uuid4().hex[:12]
    close = [("Connection", "close")]
    with srv.connect(timeout=WAIT) as slow, srv.connect(timeout=WAIT) as forking:
        slow.send(rawhttp.build_request("GET", "/gsleep?s=1.5", close))
        forking.send(rawhttp.build_request("GET", f"/gfork?name={name}&s=3&delay=0.5", close))
        with srv.connect(timeout=WAIT) as waiting:
            waiting.send(rawhttp.build_request("GET", f"/gsleep?s=0&name={queued}", close))
            assert waiting.read_response().body == b"slept"
        assert slow.read_response().body == b"slept"
        assert forking.read_response().status == 200
    (child,) = srv.wait_records(name, timeout=WAIT)  # the child did its work, and left
    assert wait_until(lambda: not running(int(child)), timeout=WAIT)
    assert len(srv.records(queued)) == 1, srv.records(queued)
