"""The `siesta` process under test: start, readiness, logs, records, stop.

`SiestaServer` launches the `siesta` console script of the running venv on
127.0.0.1:0 with tests/apps on the path, waits (bounded) for the `Listening at:`
line, drains stderr/stdout in background threads so tests can assert on the logs,
and stops it with SIGTERM then SIGKILL.  `run_siesta` runs the command to
completion for CLI tests.  Fixtures that use these live in conftest.py.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rawhttp

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
SIESTA = Path(sys.executable).parent / "siesta"
# The one place that lists the execution modes every behaviour test runs in.
MODES = [
    m.strip() for m in os.environ.get("SIESTA_TEST_MODES", "thread,gevent").split(",") if m.strip()
]
DEFAULT_APP = "router_app:app"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LISTENING = re.compile(r"Listening at: http://([\d.]+):(\d+) \((\d+)\)")
RECORD_ENV = "WSGI_TEST_RECORD_DIR"


class LogDrain:
    """Reads one pipe line by line in a thread and keeps every line."""

    def __init__(self, stream, name):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, args=(stream,), name=name, daemon=True)
        self.thread.start()

    def _run(self, stream):
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def text(self, since=0):
        with self.cond:
            return "\n".join(self.lines[since:])

    def wait_for(self, pattern, timeout, since=0):
        """The first match of regex `pattern` in lines[since:], or None after timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[since:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return None
                self.cond.wait(remaining)


class SiestaServer:
    """A running siesta process plus helpers to talk to it and read what it logged."""

    def __init__(self, app, args, mode, record_dir, env=None, preexec=None):
        self.app, self.args, self.mode = app, list(args), mode
        self.record_dir = Path(record_dir)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(SIESTA),
            "--bind",
            "127.0.0.1:0",
            "--chdir",
            str(APPS_DIR),
            "--pythonpath",
            str(APPS_DIR),
            "-k",
            mode,
        ]
        if mode == "thread" and not any(a.startswith("--threads") for a in self.args):
            cmd += ["--threads", "4"]
        self.cmd = cmd + self.args + [app]
        full_env = clean_env()
        full_env.update({RECORD_ENV: str(self.record_dir), "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        if not SIESTA.exists():
            pytest.fail(f"{SIESTA} does not exist: build the server (make dev) first")
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=str(APPS_DIR),
            preexec_fn=preexec,
        )
        self.stderr = LogDrain(self.proc.stderr, "siesta-stderr")
        self.stdout = LogDrain(self.proc.stdout, "siesta-stdout")
        match = self.stderr.wait_for(LISTENING.pattern, READY_TIMEOUT)
        if match is None:
            self.stop()
            pytest.fail(
                f"siesta did not print 'Listening at:' within {READY_TIMEOUT}s "
                f"(exit code {self.proc.returncode}); cmd: {self.cmd}\nstderr:\n"
                f"{self.stderr.text()}"
            )
        self.host, self.port, self.pid = match.group(1), int(match.group(2)), int(match.group(3))
        self.workers = _worker_count(self.args)

    def worker_pids(self, count=None, timeout=READY_TIMEOUT):
        """The master's worker processes, once `count` (default: -w) are up (bounded wait)."""
        count = self.workers if count is None else count
        deadline = time.monotonic() + timeout
        while True:
            pids = children(self.pid)
            if len(pids) == count or time.monotonic() > deadline:
                return pids
            time.sleep(0.05)

    # --- talking to it -------------------------------------------------------------
    def url(self, path="/"):
        return f"http://{self.host}:{self.port}{path}"

    def connect(self, timeout=rawhttp.TIMEOUT):
        return rawhttp.Connection(self.host, self.port, timeout)

    def request(self, method, target, headers=(), body=b"", version="HTTP/1.1"):
        return rawhttp.request(self.host, self.port, method, target, headers, body, version)

    def get(self, target, **kw):
        return self.request("GET", target, **kw)

    def assert_serving(self):
        """A plain request still gets a 200, and no worker died: the server survived
        whatever came before (a master would replace a crashed worker, so the
        workers booted are counted too)."""
        assert self.alive(), f"siesta exited with {self.proc.returncode}:\n{self.log()}"
        resp = self.get("/ping")
        assert resp.status == 200 and resp.body == b"pong", resp
        # Workers boot side by side, and the first to serve may answer before the
        # others' lines are read (bounded wait for them; one more is a crash).
        deadline = time.monotonic() + READY_TIMEOUT
        while (boots := self.log().count("Booting worker with pid")) < self.workers:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert boots == self.workers, f"{boots} boots, {self.workers} expected:\n{self.log()}"

    # --- what it logged and what the apps recorded ----------------------------------
    def alive(self):
        return self.proc.poll() is None

    def log(self, since=0):
        return self.stderr.text(since)

    def log_mark(self):
        with self.stderr.cond:
            return len(self.stderr.lines)

    def wait_log(self, pattern, since=0, timeout=10.0):
        return self.stderr.wait_for(pattern, timeout, since)

    def records(self, name):
        path = self.record_dir / name
        if not path.exists():
            return []
        return path.read_text("utf-8", "replace").splitlines()

    def wait_records(self, name, count=1, timeout=10.0):
        """Poll (bounded) until the app recorded at least `count` lines under `name`."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.records(name)
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    # --- stopping ----------------------------------------------------------------
    def stop(self):
        """SIGTERM, bounded wait, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.stderr.thread.join(STOP_TIMEOUT)
        self.stdout.thread.join(STOP_TIMEOUT)
        return self.proc.returncode


def refused(srv):
    """Whether a new connection to `srv`'s port is refused (not queued). A reset
    counts: the listener closed while the connection was in its backlog."""
    try:
        socket.create_connection((srv.host, srv.port), timeout=2.0).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def wait_until(check, timeout=20.0, interval=0.05):
    """Polls `check()` until it returns something true (bounded); returns that value,
    or the last one when the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _worker_count(args):
    """The -w/--workers value among a server's arguments (1 when absent)."""
    for i, arg in enumerate(args):
        if arg in ("-w", "--workers") and i + 1 < len(args):
            return int(args[i + 1])
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
    return 1


def children(pid):
    """The pids whose parent is `pid`, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def running(pid):
    """Whether process `pid` runs (exists and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def tree_rss_kib(root):
    """The resident memory (VmRSS, KiB) of `root` and all its descendants."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children(pid))
        try:
            with open(f"/proc/{pid}/status") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except OSError:
            pass
    return total


# What changes a default, from the shell the tests were started in.
SETTING_VARIABLES = (
    "PORT",
    "WEB_CONCURRENCY",
    "GUNICORN_CMD_ARGS",
    "FORWARDED_ALLOW_IPS",
    "SCRIPT_NAME",
    "LISTEN_FDS",
    "LISTEN_PID",
)


def clean_env():
    """This process's environment without the variables that would set Siesta's options."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SIESTA_") and k not in SETTING_VARIABLES
    }


def run_siesta(*args, env=None, timeout=30.0, cwd=None):
    """Run the siesta command to completion (for CLI tests), in `cwd` (the apps'
    directory by default); returns CompletedProcess."""
    full_env = clean_env()
    full_env.update(env or {})
    return subprocess.run(
        [str(SIESTA), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        text=True,
        env=full_env,
        cwd=str(cwd or APPS_DIR),
        timeout=timeout,
    )


def stderr_lines(result, prefix=""):
    """The non-blank lines of a finished command's stderr that start with `prefix`."""
    return [line for line in result.stderr.splitlines() if line.strip() and line.startswith(prefix)]


def assert_one_error(result, code, *words, prefix=""):
    """Exit `code`, no traceback, and one stderr line (of those starting with
    `prefix`) holding every word; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = stderr_lines(result, prefix)
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
