"""`--metrics-bind`: Prometheus counters and gauges, /status.json, health, StatsD, real processes.

A scripted set of requests (plain GETs, a POST, a refusal, one upload left
parked half way) must move exactly the counters and gauges it should, in
both modes and across two workers; the exposition must parse with the
official Prometheus parser; /metrics must answer while every app thread is
held; a worker recycled by --max-requests is counted by reason with its
counters kept; StatsD lines carry gunicorn's names. Every wait is bounded.
"""

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import rawhttp
from observe import (
    METRICS_AT,
    all_ready,
    families,
    get,
    metrics_url,
    scrape,
    status,
    value,
    wait_until,
)
from siesta_process import refused, run_siesta

METRICS = ("--metrics-bind", "127.0.0.1:0")


def once_counted(url, requests):
    """The scrape once `requests` requests have ended (bounded wait), or None."""

    def counted():
        s = scrape(url)
        return s if value(s, "siesta_request_duration_seconds_count") == requests else None

    return wait_until(counted)


def parked_upload(srv, declared, first):
    """Opens a POST that declares `declared` body bytes and sends `first` of them."""
    conn = srv.connect()
    head = f"POST /upload?chunk=65536 HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n"
    conn.send(head.encode() + b"a" * first)
    return conn


@pytest.mark.parametrize("workers", [1, 2])
def test_scripted_requests_move_the_counters(start_server, mode, workers):
    srv = start_server(
        "body_app:sha256", *METRICS, "--limit-request-body", "200000", "-w", str(workers), mode=mode
    )
    url = metrics_url(srv)
    assert wait_until(lambda: all_ready(url, workers)), status(url)
    for _ in range(3):
        assert srv.get("/").status == 200
    assert srv.request("POST", "/", body=b"x" * 1000).status == 200
    with srv.connect() as conn:  # over --limit-request-body: refused before the app
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        assert conn.read_response("POST").status == 413

    conn = parked_upload(srv, 100_000, 30_000)
    try:

        def parked():
            s = scrape(url)
            reading = value(s, "siesta_requests_in_flight", state="reading_body")
            pending = value(s, "siesta_request_body_pending_bytes")
            # The five before it are over (a client can have its answer a
            # moment before the server counts the request as ended).
            done = value(s, "siesta_request_duration_seconds_count")
            return s if (reading, pending, done) == (1, 70_000, 5) else None

        s = wait_until(parked)
        assert s, scrape(url)
        doc = status(url)
        rows = [r for r in doc["requests"] if r["path"] == "/upload"]
        assert len(rows) == 1, doc
        assert (rows[0]["state"], rows[0]["read"], rows[0]["declared"]) == (
            "reading_body",
            30_000,
            100_000,
        )
        assert value(s, "siesta_requests_total", method="GET", status_class="2xx") == 3
        assert value(s, "siesta_requests_total", method="POST", status_class="2xx") == 1
        assert value(s, "siesta_requests_total", method="POST", status_class="4xx") == 1
        assert value(s, "siesta_refusals_total", reason="limit_request_body", status="413") == 1
        assert value(s, "siesta_request_body_bytes_total") == 31_000
        assert value(s, "siesta_connections_open") >= 1
        assert value(s, "siesta_connections_active") >= 1
        assert value(s, "siesta_workers") == workers
        assert value(s, "siesta_ready") == 1

        conn.send(b"a" * 70_000)
        assert conn.read_response("POST").status == 200
    finally:
        conn.close()

    def settled():
        s = scrape(url)
        flying = sum(
            value(s, "siesta_requests_in_flight", state=st) or 0
            for st in ("queued", "app", "reading_body", "sending")
        )
        done = value(s, "siesta_request_duration_seconds_count")
        return s if flying == 0 and done == 6 else None

    s = wait_until(settled)
    assert s, scrape(url)
    assert value(s, "siesta_request_body_pending_bytes") == 0
    assert value(s, "siesta_requests_total", method="POST", status_class="2xx") == 2
    assert value(s, "siesta_request_body_bytes_total") == 101_000
    assert value(s, "siesta_request_queue_seconds_count") == 5  # the refusal never queued
    assert value(s, "siesta_request_duration_seconds_bucket", le="+Inf") == 6
    assert status(url)["requests"] == []


def test_exposition_parses_with_the_official_parser(start_server):
    srv = start_server("router_app:app", *METRICS)
    url = metrics_url(srv)
    assert srv.get("/ping").status == 200
    fams = {f.name: f for f in families(url)}
    assert all(name.startswith("siesta_") for name in fams), sorted(fams)
    want = {
        "siesta_requests": "counter",
        "siesta_request_duration_seconds": "histogram",
        "siesta_request_queue_seconds": "histogram",
        "siesta_requests_in_flight": "gauge",
        "siesta_refusals": "counter",
        "siesta_worker_starts": "counter",
        "siesta_worker_exits": "counter",
        "siesta_requests_lost": "counter",
        "siesta_worker_resident_memory_bytes": "gauge",
        "siesta_build_info": "gauge",
        "siesta_slow_uploads": "counter",
        "siesta_connections_idle": "gauge",
    }
    for name, kind in want.items():
        assert fams[name].type == kind, (name, fams.get(name))
    assert {s.labels["state"] for s in fams["siesta_requests_in_flight"].samples} == {
        "queued",
        "app",
        "reading_body",
        "sending",
    }
    assert get(url + "/healthz") == (200, "ok\n")
    assert wait_until(lambda: get(url + "/readyz")[0] == 200)


def test_metrics_answer_while_every_app_thread_is_held(start_server, mode):
    slots = ("--threads", "2") if mode == "thread" else ("--worker-connections", "2")
    srv = start_server("hold_app:app", *METRICS, *slots, mode=mode)
    url = metrics_url(srv)
    conns = []
    try:
        for t in ("a", "b"):
            c = srv.connect()
            c.send(f"GET /hold?go=release&token={t} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            conns.append(c)
        assert srv.wait_records("held-a") and srv.wait_records("held-b")
        s = wait_until(
            lambda: (
                (x := scrape(url)) and value(x, "siesta_requests_in_flight", state="app") == 2 and x
            )
        )
        assert s, scrape(url)
        assert get(url + "/healthz")[0] == 200
        held = [r for r in status(url)["requests"] if r["path"] == "/hold"]
        assert len(held) == 2 and all(r["state"] == "app" for r in held), held
    finally:
        (srv.record_dir / "release").write_text("go\n")
        for c in conns:
            c.close()


def test_recycled_worker_is_counted_by_reason(start_server):
    srv = start_server("router_app:app", *METRICS, "--max-requests", "2")
    url = metrics_url(srv)
    for _ in range(2):
        assert srv.get("/ping").status == 200
    s = one_replaced(url, "max_requests")
    # The departed worker's requests stay counted.
    assert value(s, "siesta_requests_total", method="GET", status_class="2xx") == 2


def test_a_worker_a_hook_retired_is_counted_as_hook(start_server, tmp_path):
    """gunicorn's `worker.alive = False` from a hook (session 35) ends the worker
    as --max-requests does, under its own reason."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("def post_request(worker, req, environ, resp):\n    worker.alive = False\n")
    srv = start_server("router_app:app", *METRICS, "-c", str(conf))
    url = metrics_url(srv)
    assert srv.get("/ping").status == 200
    s = one_replaced(url, "hook")
    assert value(s, "siesta_worker_exits_total", reason="max_requests") == 0


def test_a_worker_that_crashes_in_its_last_request_is_counted_as_a_crash(start_server):
    """Review (session 38): the master marks a worker recycled as its last request
    before --max-requests starts (to start its replacement then), so a crash in
    that request was counted as a recycle."""
    srv = start_server("supervisor_app:app", *METRICS, "--max-requests", "2")
    url = metrics_url(srv)
    assert srv.get("/ping").status == 200
    mark = srv.log_mark()
    with contextlib.suppress(OSError, rawhttp.IncompleteHead):
        srv.get("/abort")  # the last: the worker tells its master, then aborts
    assert srv.wait_log("Autorestarting worker after current request.", since=mark)
    s = one_replaced(url, "crash")
    assert value(s, "siesta_worker_exits_total", reason="max_requests") == 0


def one_replaced(url, reason):
    """The scrape once one worker has exited for `reason` and its replacement
    started (bounded)."""

    def replaced():
        s = scrape(url)
        exits = value(s, "siesta_worker_exits_total", reason=reason)
        return s if exits == 1 and value(s, "siesta_worker_starts_total") == 2 else None

    s = wait_until(replaced)
    assert s, scrape(url)
    return s


def test_reloads_are_counted_by_outcome(start_server, tmp_path):
    """A HUP whose new workers serve is `done`; one whose config is refused is
    `config_refused` (the running config kept, its workers still renewed), and
    only that (review, session 28: it was counted `done` too), so a deploy that
    did not take can be alerted on."""
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\n")
    srv = start_server("router_app:app", *METRICS, "-c", str(conf))
    url = metrics_url(srv)
    srv.proc.send_signal(signal.SIGHUP)

    def outcome(name, count):
        return lambda: value(scrape(url), "siesta_reloads_total", outcome=name) == count

    assert wait_until(outcome("done", 1)), scrape(url)
    conf.write_text("workers = (\n")
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(outcome("config_refused", 1)), scrape(url)
    conf.write_text("workers = 1\n")
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(outcome("done", 2)), scrape(url)
    s = scrape(url)
    assert value(s, "siesta_reloads_total", outcome="config_refused") == 1, s
    assert value(s, "siesta_reloads_total", outcome="given_up") == 0, s
    assert srv.get("/ping").status == 200


def test_readyz_says_draining_after_term(start_server):
    srv = start_server("hold_app:app", *METRICS, "--graceful-timeout", "20")
    url = metrics_url(srv)
    assert wait_until(lambda: get(url + "/readyz")[0] == 200)
    conn = srv.connect()
    try:
        conn.send(b"GET /hold?go=release&token=t HTTP/1.1\r\nHost: x\r\n\r\n")
        assert srv.wait_records("held-t")
        srv.proc.terminate()
        got = wait_until(lambda: (r := get(url + "/readyz"))[0] == 503 and r)
        assert got and "draining" in got[1], got
    finally:
        (srv.record_dir / "release").write_text("go\n")
        conn.close()


def test_the_worker_target_is_there_from_the_first_scrape(start_server):
    """QA probe (session 28): siesta_workers_target (and the master's phase) were
    published at the master's first tick, so scrapes in the first second after the
    start read a target of 0 workers. They are published before the first wait now."""
    srv = start_server("router_app:app", *METRICS, "-w", "2")
    s = scrape(metrics_url(srv))
    assert value(s, "siesta_workers_target") == 2, s


@pytest.mark.timeout(120)
def test_requests_killed_with_their_worker_are_counted_as_lost(start_server, mode):
    """QA probe (session 28): a request killed with its worker (here by --timeout) was
    counted nowhere: not in siesta_requests_total, and its in-flight gauge went with
    the worker. siesta_requests_lost_total{reason} counts it, by the worker's exit
    reason, next to the one request that was answered."""
    threads = ("--threads", "1") if mode == "thread" else ()
    srv = start_server(
        "supervisor_app:app", *METRICS, "-w", "1", "--timeout", "2", *threads, mode=mode
    )
    url = metrics_url(srv)
    answered = srv.get("/pid")
    assert answered.status == 200
    old = answered.body.decode()
    conn = srv.connect()
    try:
        conn.send(b"GET /spin?seconds=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert srv.wait_log(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=20), srv.log()
        s = one_lost(url, "timeout")
    finally:
        conn.close()
    assert value(s, "siesta_requests_total", method="GET", status_class="2xx") == 1


def one_lost(url, reason):
    """The scrape once one request is lost under `reason` (bounded), none under the others."""
    s = wait_until(
        lambda: (
            (x := scrape(url)) and value(x, "siesta_requests_lost_total", reason=reason) == 1 and x
        )
    )
    assert s, scrape(url)
    others = [r for r in ("crash", "stop", "reload", "timeout") if r != reason]
    assert sum(value(s, "siesta_requests_lost_total", reason=r) for r in others) == 0
    return s


def test_a_response_cut_when_a_reload_ran_out_of_time_is_lost(start_server, mode):
    """QA (session 35): a response already streaming when a HUP's (or TERM's)
    --graceful-timeout ran out was cut, yet counted in siesta_requests_total as a
    2xx and logged as nothing but its access line. It is lost now, under the
    worker's exit reason, as one cut before its head went out is, and the error
    log says so."""
    srv = start_server("router_app:app", *METRICS, "-w", "1", "--graceful-timeout", "1", mode=mode)
    url = metrics_url(srv)
    conn = srv.connect()
    try:
        conn.send(b"GET /stream?count=300&size=1024&delay=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.read_head()
        assert head[2] == 200, head
        mark = srv.log_mark()
        srv.proc.send_signal(signal.SIGHUP)
        cut_and_lost(srv, url, mark, r"/stream\?count=300\S*", r"\d+")
    finally:
        conn.close()


def cut_and_lost(srv, url, mark, target, sent, status="200"):
    """Asserts the error log's cut line for GET `target` (a pattern) after `sent`
    body bytes, and that the request is lost to the reload, not counted answered."""
    said = rf"Response {status} to GET {target} for \S+ cut after {sent} body bytes: "
    assert srv.wait_log(said + r"the stop's time ran out", since=mark, timeout=20), srv.log()
    # The worker's one line for every connection it cut (session 36: a request
    # still in the app when its worker exits has no other).
    cut = r"1 request\(s\) still running were cut: the stop's time ran out"
    assert srv.wait_log(cut, since=mark), srv.log(mark)
    s = one_lost(url, "reload")
    for status_class in ("2xx", "5xx"):
        assert value(s, "siesta_requests_total", method="GET", status_class=status_class) == 0


@pytest.mark.parametrize("answer", ["200", "500"])
def test_a_response_that_starts_after_the_stop_cut_its_connection_is_lost(
    start_server, mode, answer
):
    """QA (session 36): an app that answered after the stop's time ran out and cut
    its connection, but before the worker exited, had its response counted as a
    2xx in siesta_requests_total, though it went nowhere; an app answering later
    still was lost with its worker. Both are lost now, and the error log says so.
    Review: so is the 500 of an app that raised after the cut."""
    srv = start_server("router_app:app", *METRICS, "-w", "1", "--graceful-timeout", "1", mode=mode)
    url = metrics_url(srv)
    assert wait_until(lambda: all_ready(url, 1)), status(url)
    go = "go-" + rawhttp.new_token()
    conn = srv.connect()
    try:
        fail = "&fail=1" if answer == "500" else ""
        conn.send(rawhttp.build_request("GET", f"/gated?go={go}&late=1{fail}"))
        mark = srv.log_mark()
        srv.proc.send_signal(signal.SIGHUP)
        # The stop's time runs out and cuts the connection; the app is still waiting.
        with pytest.raises((rawhttp.IncompleteHead, ConnectionResetError)):
            conn.read_head()
        (srv.record_dir / go).write_text("go\n")
        cut_and_lost(srv, url, mark, r"/gated\?go=\S*", "0", answer)
    finally:
        conn.close()


@pytest.mark.parametrize("term_first", [True, False], ids=["during-term", "alone"])
def test_a_fast_stop_says_so_for_the_requests_it_cut(start_server, mode, term_first):
    """Review (session 36): an INT that came more than the drain's first second into
    a TERM's stop cut the requests still running, and the warning blamed
    --graceful-timeout, 18 s before it would have run out. And (noted since session
    36) a stop that began with INT cut them without a line at all."""
    srv = start_server("router_app:app", "-w", "1", "--graceful-timeout", "20", mode=mode)
    go = "go-" + rawhttp.new_token()
    conn = srv.connect()
    try:
        conn.send(rawhttp.build_request("GET", f"/gated?go={go}&late=1"))
        assert srv.wait_records("paths", 1) == ["/gated"], srv.log()  # in the app
        mark = srv.log_mark()
        said = r"1 request\(s\) still running were cut: a fast stop \(INT or QUIT\)$"
        if term_first:
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.wait_log("Handling signal: term", since=mark), srv.log(mark)
            time.sleep(1.5)  # past the drain's first second, where the request still runs
            said = said.removesuffix("$") + " came during"
        srv.proc.send_signal(signal.SIGINT)
        assert srv.wait_log(said, since=mark, timeout=20), srv.log(mark)
    finally:
        (srv.record_dir / go).write_text("go\n")
        conn.close()


def test_a_unix_metrics_socket_file_is_removed_at_the_stop(start_server, tmp_path):
    """Review (session 29): the socket file of a unix --metrics-bind stayed after a
    TERM (the binds' own files went); it goes with them now."""
    path = tmp_path / "m.sock"
    srv = start_server("router_app:app", "--metrics-bind", f"unix:{path}")
    assert srv.wait_log(r"Metrics at: unix:"), srv.log()
    assert path.exists()
    srv.stop()
    assert not path.exists()


def listening_inode(port):
    """The inode of the IPv4 socket listening on `port` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # TCP_LISTEN
            return fields[9]
    return None


def socket_inodes(pid):
    """The inodes of the sockets process `pid` holds."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def test_a_draining_server_with_metrics_refuses_new_connections(start_server):
    """QA probe (session 26): the metrics process, forked from the master, kept
    the app's listening socket: once TERM closed the master's and the workers'
    copies, new connections waited in its backlog instead of being refused,
    which a load balancer takes for a slow server rather than a gone one. The
    workers no longer hold the metrics listener either."""
    srv = start_server("hold_app:app", *METRICS, "--graceful-timeout", "20")
    url = metrics_url(srv)
    assert wait_until(lambda: get(url + "/readyz")[0] == 200)
    listener = listening_inode(int(url.rsplit(":", 1)[1]))
    assert listener
    metrics_pid = int(srv.wait_log(METRICS_AT.pattern).group(2))
    workers = [p for p in srv.worker_pids(count=2) if p != metrics_pid]
    assert len(workers) == 1, workers
    assert listener not in socket_inodes(workers[0]), "the worker holds the metrics listener"
    conn = srv.connect()
    try:
        conn.send(b"GET /hold?go=release&token=t HTTP/1.1\r\nHost: x\r\n\r\n")
        assert srv.wait_records("held-t")
        srv.proc.terminate()
        # Well within the held request's 20 s: the server is still draining it.
        drained = wait_until(lambda: refused(srv), timeout=8)
        assert drained, "a new connection was still accepted after TERM"
        assert srv.alive(), srv.log()
    finally:
        (srv.record_dir / "release").write_text("go\n")
        conn.close()


def test_metrics_bind_in_use_is_reported_at_start():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = run_siesta(
            "-b", "127.0.0.1:0", "--metrics-bind", f"127.0.0.1:{port}", "router_app:app"
        )
    assert done.returncode == 1, done.stderr
    assert "in use" in done.stderr, done.stderr


def counts(lines, name):
    """The sum of a StatsD counter's values over `lines`."""
    return sum(
        int(line.split(":")[1].split("|")[0]) for line in lines if line.startswith(name + ":")
    )


def test_statsd_lines_use_gunicorns_names(start_server, mode):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5.0)
        port = sink.getsockname()[1]
        srv = start_server(
            "router_app:app",
            "--statsd-host",
            f"127.0.0.1:{port}",
            "--statsd-prefix",
            "myapp",
            mode=mode,
        )
        for _ in range(2):
            assert srv.get("/ping").status == 200
        # An app exception is gunicorn's `log.exception` (session 24: it was
        # counted as gunicorn.log.error).
        assert srv.get("/raise/before?token=s1").status == 500
        lines = []

        def complete():
            durations = [x for x in lines if x.startswith("myapp.gunicorn.request.duration:")]
            return (
                counts(lines, "myapp.gunicorn.requests") == 3
                and counts(lines, "myapp.gunicorn.request.status.200") == 2
                and counts(lines, "myapp.gunicorn.request.status.500") == 1
                and counts(lines, "myapp.gunicorn.log.exception") == 1
                and "myapp.gunicorn.workers:1|g" in lines
                and len(durations) == 3
            )

        try:
            while not complete():
                lines += sink.recv(65536).decode().splitlines()
        except TimeoutError:
            pass
    assert complete(), lines
    durations = [x for x in lines if x.startswith("myapp.gunicorn.request.duration:")]
    assert all(d.endswith("|ms") for d in durations), lines
    assert counts(lines, "myapp.gunicorn.log.error") == 0, lines


def post_first_4k(srv, target):
    """A connection that sent a POST head declaring 100,000 bytes, and 4 KiB of them."""
    conn = srv.connect()
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    conn.send(head.encode() + b"a" * 4096)
    return conn


def released_from_the_app(srv, url, conn, tok):
    """Waits until the one request in flight is in the app state (not
    reading_body), then lets the app answer (record go-TOK) and checks it did."""

    def in_app():
        s = scrape(url)
        state = (
            value(s, "siesta_requests_in_flight", state="reading_body"),
            value(s, "siesta_requests_in_flight", state="app"),
        )
        return s if state == (0, 1) else None

    assert wait_until(in_app), scrape(url)
    (srv.record_dir / f"go-{tok}").write_text("go\n")
    assert conn.read_response("POST").status == 200


def test_statsd_gets_a_leaving_workers_last_counts(start_server, mode):
    """QA probe (session 28): a worker that left at once after its last requests
    (TERM, TTOU, --max-requests) lost the batch its StatsD thread had not sent
    yet: 0 of 100 requests counted after an immediate TERM. It sends it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5.0)
        port = sink.getsockname()[1]
        srv = start_server("router_app:app", "--statsd-host", f"127.0.0.1:{port}", mode=mode)
        for _ in range(30):
            assert srv.get("/ping").status == 200
        srv.proc.terminate()
        assert srv.proc.wait(20) == 0, srv.log()
        lines = []
        with contextlib.suppress(TimeoutError):
            while counts(lines, "gunicorn.requests") < 30:
                lines += sink.recv(65536).decode().splitlines()
    assert counts(lines, "gunicorn.requests") == 30, lines


def test_read_woken_from_a_park_is_back_in_the_app(start_server, mode):
    """Issue #16: a read that parked and was then answered (in gevent mode by
    the body pump, with no second wait) puts the request back in the app
    state, not in reading_body while the app runs on."""
    srv = start_server("router_app:app", *METRICS, mode=mode)
    url = metrics_url(srv)
    tok = "pumped"
    conn = post_first_4k(srv, f"/read-hold?n=100000&go=go-{tok}&token={tok}")
    try:

        def parked():
            s = scrape(url)
            return s if value(s, "siesta_requests_in_flight", state="reading_body") == 1 else None

        assert wait_until(parked), scrape(url)
        conn.send(b"a" * (100_000 - 4096))
        assert srv.wait_records(f"held-{tok}") == ["read 100000"], srv.log()
        released_from_the_app(srv, url, conn, tok)
    finally:
        conn.close()


def test_a_read_ended_by_a_thrown_timeout_is_back_in_the_app(start_server):
    """Issue #16 review: a parked gevent read ended by an exception thrown into
    its greenlet (a `gevent.Timeout`) left the request in reading_body while
    the app ran on."""
    srv = start_server("router_app:app", *METRICS, mode="gevent")
    url = metrics_url(srv)
    tok = "thrown"
    conn = post_first_4k(srv, f"/thrown-hold?go=go-{tok}&token={tok}")
    try:
        assert srv.wait_records(f"held-{tok}") == ["failed Timeout"], srv.log()
        released_from_the_app(srv, url, conn, tok)
    finally:
        conn.close()


def test_an_app_failing_after_its_head_is_no_refusal(start_server, mode):
    """QA probe (session 23): an app that raised after its 200 head went out was
    counted in siesta_refusals_total{reason="app_error",status="500"}, beside the
    200 in siesta_requests_total: it was aborted, not refused. One that fails
    before its head still is a refusal (the server answers the 500)."""
    srv = start_server("router_app:app", *METRICS, mode=mode)
    url = metrics_url(srv)
    assert wait_until(lambda: all_ready(url, 1)), status(url)
    with srv.connect() as conn:
        conn.send(rawhttp.build_request("GET", "/raise/after-chunk?token=m1"))
        assert conn.read_head()[2] == 200
        conn.wait_closed()
    assert srv.get("/raise/before?token=m2").status == 500

    s = once_counted(url, 2)
    assert s, scrape(url)
    assert value(s, "siesta_requests_total", method="GET", status_class="2xx") == 1
    assert value(s, "siesta_refusals_total", reason="app_error", status="500") == 1


def test_a_client_gone_mid_upload_is_no_app_error(start_server, mode):
    """Session 24: a client that went away mid-upload, with the app letting
    siesta.ClientDisconnected through, was counted in
    siesta_refusals_total{reason="app_error",status="500"}: an alert on the
    5xx rate fired for every abandoned upload. It is the client's doing."""
    srv = start_server("router_app:app", *METRICS, mode=mode)
    url = metrics_url(srv)
    assert wait_until(lambda: all_ready(url, 1)), status(url)
    with srv.connect() as conn:
        conn.send(rawhttp.build_request("POST", "/sha256?gone=m", [("Content-Length", "100000")]))
        conn.send(b"d" * 5000)

    s = once_counted(url, 1)
    assert s, scrape(url)
    assert value(s, "siesta_refusals_total", reason="client_disconnected", status="400") == 1
    assert value(s, "siesta_refusals_total", reason="app_error", status="500") == 0


def test_response_bytes_are_counted_as_they_go(start_server, mode):
    """Session 24: siesta_response_body_bytes_total moved only when a response
    ended, so a long download showed nothing until its end, then a jump. The
    bytes count once handed to the connection, and once only."""
    srv = start_server("router_app:app", *METRICS, mode=mode)
    url = metrics_url(srv)
    assert wait_until(lambda: all_ready(url, 1)), status(url)
    go = "go-" + rawhttp.new_token()
    with srv.connect() as conn:
        conn.send(rawhttp.build_request("GET", f"/gated?go={go}"))
        assert conn.read_head()[2] == 200
        assert conn.read_chunk() == b"first;"
        # The app now waits for `go`, its response under way.
        assert wait_until(
            lambda: value(scrape(url), "siesta_response_body_bytes_total") == len(b"first;")
        ), scrape(url)
        (srv.record_dir / go).write_text("go\n")
        assert conn.read_chunk() == b"second:go"
        assert conn.read_chunk() == b""

    s = once_counted(url, 1)
    assert s, scrape(url)
    assert value(s, "siesta_response_body_bytes_total") == len(b"first;second:go")


def test_statsd_counts_a_hooks_exception_as_an_exception(start_server, tmp_path):
    """Review (session 24): a hook that raised (logged with its traceback) was
    counted as gunicorn.log.error; gunicorn counts it as gunicorn.log.exception."""
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(
        "def post_request(worker, req, environ, resp):\n"
        "    raise RuntimeError('post_request failed')\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5.0)
        port = sink.getsockname()[1]
        srv = start_server("router_app:app", "-c", str(conf), "--statsd-host", f"127.0.0.1:{port}")
        assert srv.get("/ping").status == 200
        lines = []
        try:
            while counts(lines, "gunicorn.log.exception") < 1:
                lines += sink.recv(65536).decode().splitlines()
        except TimeoutError:
            pass
    assert counts(lines, "gunicorn.log.exception") == 1, lines
    assert counts(lines, "gunicorn.log.error") == 0, lines


def test_a_metrics_bind_that_is_a_bind_too_is_refused_at_once():
    """Review 2 (session 25): `-b X --metrics-bind X` waited 4 s for the address
    and then said it was in use; it is a mistake to name at once. A bad
    --metrics-bind of another kind is named too."""
    done = run_siesta("-b", "127.0.0.1:8123", "--metrics-bind", "127.0.0.1:8123", "router_app:app")
    assert done.returncode == 1, done.stderr
    assert "retrying" not in done.stderr, done.stderr
    assert "Error: --metrics-bind 127.0.0.1:8123 is a -b address too" in done.stderr, done.stderr


def test_accept_failures_are_counted(start_server, mode):
    """QA (session 30): a worker out of file descriptors fails every accept()
    while its connections wait in the backlog, and only its error log said so:
    siesta_accept_failures_total counts them now. Once the limit is lifted the
    waiting connection is served."""
    import resource

    srv = start_server("router_app:app", *METRICS, "-w", "1", mode=mode)
    url = metrics_url(srv)
    assert srv.get("/ping").status == 200
    assert value(scrape(url), "siesta_accept_failures_total") == 0
    metrics_pid = int(srv.wait_log(METRICS_AT.pattern).group(2))
    (worker,) = [p for p in srv.worker_pids(count=2) if p != metrics_pid]
    soft, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{worker}/fd"))
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (in_use, hard))
    try:
        with srv.connect() as conn:
            conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert srv.wait_log(r"Accept failed: .*Too many open files"), srv.log()
            failures = wait_until(lambda: value(scrape(url), "siesta_accept_failures_total"))
            assert failures >= 1
            resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
            assert conn.read_response().body == b"pong"
    finally:
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
