"""Rolling deploy behind nginx: requests failed while instances are replaced, vs gunicorn.

The scenario of tests/test_rolling_deploy.py, run longer and against each
server: two instances (2 workers each) on unix sockets behind docs/deploy.md's
`nginx-rolling` block, client threads sending 256 KiB uploads to `/upload`
(the sha256 checked) and 1 MiB downloads from `/stream?mib=1` (the length
checked) on fresh connections, while each instance in turn gets TERM and is
started again (ROUNDS times; the next instance only once nginx sends the
restarted one traffic again), and then one gets HUPS reloads. Every request
that is not a complete 200 counts as failed. Writes
`results/<run>-rolling.json` and `.md` and prints the table; a server that
cannot be found or started is reported, not fatal. nginx comes from
tests/front_proxies.py (apt-get when missing); gunicorn from the peers venv
(bench/.venv-peers, made with requirements-peers.txt's pin when missing).
Never part of the test suite; no figure here is asserted anywhere.

    .venv/bin/python bench/rolling.py [--rounds 3] [--hups 5] [--servers siesta,gunicorn]
"""

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))  # the nginx runner and deploy.md's configs

import deploy_doc  # noqa: E402
import front_proxies  # noqa: E402
import rawhttp  # noqa: E402

SIESTA = ROOT / ".venv" / "bin" / "siesta"
PEERS = BENCH / ".venv-peers"
UPLOAD = os.urandom(256 * 1024)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()
READY = 30.0


def gunicorn_binary():
    gunicorn = PEERS / "bin" / "gunicorn"
    if not gunicorn.exists():
        pin = next(
            line.strip()
            for line in (BENCH / "requirements-peers.txt").read_text().splitlines()
            if line.startswith("gunicorn")
        )
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        subprocess.run([str(PEERS / "bin" / "pip"), "install", "-q", pin], check=True)
    return gunicorn


def argv(server, sock):
    common = ["--chdir", str(BENCH), "-w", "2", "--graceful-timeout", "30", "--access-logfile", "-"]
    if server == "siesta":
        return [
            str(SIESTA),
            "-k",
            "thread",
            "--threads",
            "8",
            "-b",
            f"unix:{sock}",
            *common,
            "app:app",
        ]
    return [
        str(gunicorn_binary()),
        "-k",
        "gthread",
        "--threads",
        "8",
        "-b",
        f"unix:{sock}",
        *common,
        "app:app",
    ]


class Instance:
    """One server process on a unix socket, its log in `log`."""

    def __init__(self, server, sock, log):
        self.sock, self.log = Path(sock), Path(log)
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv(server, sock), stdout=out, stderr=subprocess.STDOUT, cwd=BENCH
            )
        deadline = time.monotonic() + READY
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{server} exited with {self.proc.returncode} (see {log})")
            if self.sock.exists() and len(self.workers()) == 2:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{server} not ready within {READY} s (see {log})")

    def wait_traffic(self):
        """Until nginx sends this (restarted) instance requests again: its
        fail_timeout is over, so the other one may be stopped."""
        deadline = time.monotonic() + READY
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(self.log_start)
                text = f.read()
            if b'"GET /' in text or b'"POST /' in text:
                return
            time.sleep(0.05)
        raise RuntimeError(f"nginx sent no traffic to {self.sock} in time")

    def workers(self):
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(entry))
        return set(out)

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def hup(self):
        old = self.workers()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + READY
        while time.monotonic() < deadline:
            now = self.workers()
            if len(now) == 2 and not now & old:
                return
            time.sleep(0.05)
        raise RuntimeError("HUP did not replace the workers in time")


class Load:
    """Client threads through nginx, counting complete and failed requests."""

    def __init__(self, port, threads):
        self.port, self.ok, self.failed, self.kinds = port, 0, 0, {}
        self.lock, self.stop_flag = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]
        for t in self.threads:
            t.start()

    def one(self, n):
        with rawhttp.Connection("127.0.0.1", self.port, timeout=30) as conn:
            if n % 2:
                conn.send(rawhttp.build_request("POST", "/upload", body=UPLOAD))
                r = conn.read_response()
                return r.status, r.status == 200 and r.body.split()[-1].decode() == UPLOAD_SHA
            conn.send(rawhttp.build_request("GET", "/stream?mib=1"))
            r = conn.read_response()
            return r.status, r.status == 200 and r.complete and len(r.body) == 1 << 20

    def run(self, i):
        n = i
        while not self.stop_flag.is_set():
            n += 1
            try:
                status, good = self.one(n)
            except (OSError, ValueError, AssertionError) as exc:
                status, good = type(exc).__name__, False
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.kinds[str(status)] = self.kinds.get(str(status), 0) + 1

    def settle(self, seconds):
        """Lets the load run on its own for a while (every phase is followed by one)."""
        time.sleep(seconds)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)


def scenario(server, rounds, hups, tmp):
    socks = [tmp / f"{server}-a.sock", tmp / f"{server}-b.sock"]
    logs = [tmp / f"{server}-a.log", tmp / f"{server}-b.log"]
    instances = [Instance(server, socks[i], logs[i]) for i in (0, 1)]
    site = deploy_doc.nginx_rolling(deploy_doc.config("nginx-rolling"), socks)
    proxy = front_proxies.nginx(tmp / f"nginx-{server}", http=site)
    load = Load(proxy.port, threads=4)
    started = time.monotonic()
    try:
        load.settle(2)
        for _ in range(rounds):
            for i in (0, 1):
                instances[i].term()
                load.settle(1)
                instances[i] = Instance(server, socks[i], logs[i])
                instances[i].wait_traffic()
                load.settle(1)
        for _ in range(hups):
            instances[0].hup()
            load.settle(1)
    finally:
        load.stop()
        proxy.stop()
        for inst in instances:
            if inst.proc.poll() is None:
                inst.term()
    return {
        "server": server,
        "requests": load.ok + load.failed,
        "failed": load.failed,
        "failures": load.kinds,
        "terms": 2 * rounds,
        "hups": hups,
        "seconds": round(time.monotonic() - started, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="TERM+restart rounds (each instance)")
    ap.add_argument("--hups", type=int, default=5, help="HUP reloads of one instance")
    ap.add_argument("--servers", default="siesta,gunicorn")
    args = ap.parse_args()
    run_id = time.strftime("%Y-%m-%d-%H%M%S")
    rows = []
    for server in args.servers.split(","):
        with tempfile.TemporaryDirectory(prefix=f"rolling-{server}-") as tmp:
            try:
                rows.append(scenario(server, args.rounds, args.hups, Path(tmp)))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                rows.append({"server": server, "error": str(exc)})
        print(json.dumps(rows[-1]), flush=True)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    meta = {"run": run_id, "machine": platform.platform(), "cpus": os.cpu_count(), **vars(args)}
    (out / f"{run_id}-rolling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# Rolling deploy behind nginx ({run_id})",
        "",
        f"{args.rounds} TERM+restart rounds per instance, then {args.hups} HUPs; "
        "2 instances x 2 workers on unix sockets; 4 client threads, fresh connections, "
        "256 KiB uploads and 1 MiB downloads alternating.",
        "",
        "| server | requests | failed ↓ | failures | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['server']} | – | – | {r['error']} | – |")
        else:
            kinds = ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "–"
            lines.append(
                f"| {r['server']} | {r['requests']} | {r['failed']} | {kinds} | {r['seconds']} |"
            )
    (out / f"{run_id}-rolling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
