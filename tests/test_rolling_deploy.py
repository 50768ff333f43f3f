"""A rolling deploy behind nginx loses no request (docs/deploy.md, "Rolling deploys").

Issue "Behind a load balancer": replacing instances must not fail requests.
Two Siesta instances on unix sockets sit behind deploy.md's nginx block
(`proxy_next_upstream error timeout http_502`, `max_fails`). Client threads
send a bounded stream of mixed uploads and downloads (each checked whole)
while each instance in turn gets TERM and is started again, and while one
gets five HUP reloads. Every request is counted and none may fail. The same
scenario against gunicorn is bench/rolling.py, never part of the suite.
"""

import json
import signal
import threading
import time

import deploy_doc
import front_proxies
import pytest
import rawhttp
from siesta_process import children

APP = "proxy_app:app"
PIECE = 256 * 1024
WAIT = 30.0


class ClientLoop:
    """Threads sending uploads and downloads through the proxy until stopped."""

    def __init__(self, port, threads=3):
        self.port = port
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        for t in self.threads:
            t.start()

    def _one(self, i, n):
        with rawhttp.Connection("127.0.0.1", self.port, timeout=20) as conn:
            if (i + n) % 2:
                body = bytes([n % 256]) * PIECE
                conn.send(rawhttp.build_request("POST", f"/upload?token=r{i}", body=body))
                resp = conn.read_response()
                good = resp.status == 200 and json.loads(resp.body)["size"] == PIECE
            else:
                conn.send(rawhttp.build_request("GET", f"/download?size={PIECE}"))
                resp = conn.read_response()
                good = resp.status == 200 and resp.complete and len(resp.body) == PIECE
        return good, resp.status

    def _run(self, i):
        n = 0
        while not self.stopping.is_set() and n < 100_000:
            n += 1
            try:
                good, status = self._one(i, n)
            except (OSError, ValueError, AssertionError) as exc:
                good, status = False, repr(exc)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failures.append(status)

    def wait_ok(self, more, timeout=WAIT):
        """Bounded: until `more` further requests have succeeded."""
        target = self.ok + more
        deadline = time.monotonic() + timeout
        while self.ok < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.ok >= target, f"the loop stalled at {self.ok} ({self.failures[:5]})"

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(WAIT)


def reload_and_wait(server):
    """HUP, then (bounded) until every worker is a new one."""
    old = set(server.worker_pids())
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        now = set(children(server.pid))
        if len(now) == server.workers and not now & old:
            return
        time.sleep(0.05)
    raise AssertionError(f"HUP did not replace workers {old}:\n{server.log()}")


@pytest.mark.slow
def test_rolling_deploy_behind_nginx_loses_nothing(start_server, tmp_path):
    sockets = [tmp_path / "a.sock", tmp_path / "b.sock"]

    def start(i):
        return start_server(APP, "--bind", f"unix:{sockets[i]}", "-w", "2", "--access-logfile", "-")

    def serving(instance):
        """Bounded: until nginx sends this instance requests again (its fail_timeout
        is over): a rolling deploy moves on only then, as it would on a health check."""
        mark = len(instance.stdout.lines)
        assert instance.stdout.wait_for(r'"(GET|POST) /', WAIT, since=mark), "no traffic"

    instances = [start(0), start(1)]
    site = deploy_doc.nginx_rolling(deploy_doc.config("nginx-rolling"), sockets)
    proxy = front_proxies.nginx(tmp_path / "nginx", http=site)
    loop = ClientLoop(proxy.port)
    try:
        loop.wait_ok(20)
        for i in (0, 1):
            instances[i].stop()  # TERM: drain, then exit
            loop.wait_ok(10)  # served by the other one meanwhile
            instances[i] = start(i)
            serving(instances[i])
            loop.wait_ok(20)
        for _ in range(5):
            reload_and_wait(instances[0])
            loop.wait_ok(10)
    finally:
        loop.stop()
        proxy.stop()
    summary = f"{loop.ok} requests, {len(loop.failures)} failed: {loop.failures[:10]}"
    print(f"rolling deploy behind nginx: {summary}")
    assert not loop.failures, summary
    assert loop.ok >= 130, summary
