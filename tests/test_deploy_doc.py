"""docs/deploy.md's systemd units run as systemd would run them, and its numbers agree.

Issue "Behind a load balancer": the deployment guide must not drift from
what works. There is no systemd in the test machine, so the test does what
systemd does with `siesta.socket` and `siesta.service`: it binds the
`ListenStream` address (port 0 in place of 8000), passes it as fd 3 with
`LISTEN_FDS=1` and `LISTEN_PID`, runs `ExecStart` in `WorkingDirectory`
(the test app in place of /srv/app; `User=` is not applied) and, for
`Type=notify`, waits for `READY=1` on its `NOTIFY_SOCKET`, stops it with
`KillSignal` and starts it again while a client keeps sending, and reloads
it with `ExecReload`'s HUP. Requests sent while the service is down wait in
the socket and are all answered. The Kubernetes manifest is checked for the
arithmetic its text relies on.
"""

import re
import shlex
import signal
import socket
import subprocess
import threading
import time

import deploy_doc
import pytest
import rawhttp
from siesta_process import APPS_DIR, SIESTA, LogDrain, children

READY = 30.0


def unit(name):
    """A unit file's `Key=Value` lines as a dict (one section is enough here)."""
    text = deploy_doc.config(name)
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


class Service:
    """ExecStart under a socket we hold, as systemd runs it."""

    def __init__(self, sock, tmp_path):
        service = unit("systemd-service")
        argv = shlex.split(service["ExecStart"])
        assert argv[0] == "/srv/app/.venv/bin/siesta" and argv[-1] == "app:app"
        argv = [str(SIESTA), *argv[1:-1], "proxy_app:app"]
        self.kill_signal = getattr(signal, service["KillSignal"])
        self.stop_timeout = float(service["TimeoutStopSec"])
        # The socket becomes fd 3 and LISTEN_PID the pid that execs Siesta.
        script = f"exec 3<&{sock.fileno()}; export LISTEN_PID=$$; exec {shlex.join(argv)}"
        env = {"PATH": "/usr/bin:/bin", "LISTEN_FDS": "1"}
        notify = None
        if service["Type"] == "notify":  # the start waits for READY=1 there
            assert service.get("NotifyAccess") == "main"
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = tmp_path / f"notify-{len(list(tmp_path.iterdir()))}"
            notify.bind(str(path))
            env["NOTIFY_SOCKET"] = str(path)
        self.proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=APPS_DIR,  # WorkingDirectory
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(sock.fileno(),),
        )
        self.log = LogDrain(self.proc.stderr, "service-stderr")
        if notify is not None:
            with notify:
                notify.settimeout(READY)
                said, _ = notify.recvfrom(4096)
            assert said.split(b"\n")[0] == b"READY=1", said
        workers = int(argv[argv.index("-w") + 1])
        deadline = time.monotonic() + READY
        while len(children(self.proc.pid)) < workers and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.text()
            time.sleep(0.05)
        assert self.log.wait_for("Listening at:", READY), self.log.text()

    def stop(self):
        self.proc.send_signal(self.kill_signal)
        self.proc.wait(self.stop_timeout)
        self.log.thread.join(5)


def test_systemd_socket_activation_keeps_connections_across_a_restart(tmp_path):
    socket_unit = unit("systemd-socket")
    host, _ = socket_unit["ListenStream"].rsplit(":", 1)
    with socket.socket() as sock:
        sock.bind((host, 0))  # only the port differs from the unit
        sock.listen(128)
        port = sock.getsockname()[1]
        service = Service(sock, tmp_path)
        ok, failed, stop = [0], [], threading.Event()

        def client():
            while not stop.is_set():
                try:
                    resp = rawhttp.request(host, port, "GET", "/ping")
                    good = resp.status == 200 and resp.body == b"pong"
                except (OSError, rawhttp.IncompleteHead) as exc:
                    good, resp = False, (time.monotonic(), repr(exc))
                if good:
                    ok[0] += 1
                else:
                    failed.append(resp)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            _wait_more(ok, 20)
            service.stop()  # systemctl stop: the socket stays with "systemd"
            before = ok[0]
            service = Service(sock, tmp_path)  # systemctl start
            _wait_more(ok, 20)
            assert ok[0] > before
            old = set(children(service.proc.pid))
            service.proc.send_signal(signal.SIGHUP)  # ExecReload
            deadline = time.monotonic() + READY
            while set(children(service.proc.pid)) & old and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not set(children(service.proc.pid)) & old, "HUP did not replace the workers"
            _wait_more(ok, 20)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            service.stop()
    assert not failed, f"{len(failed)} failed of {ok[0] + len(failed)}: {failed[:5]}"


def _wait_more(ok, n, timeout=READY):
    target = ok[0] + n
    deadline = time.monotonic() + timeout
    while ok[0] < target and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ok[0] >= target, "requests stopped being answered"


def test_stop_timeouts_cover_the_graceful_timeout():
    service = unit("systemd-service")
    graceful = float(re.search(r"--graceful-timeout (\d+)", service["ExecStart"]).group(1))
    assert float(service["TimeoutStopSec"]) > graceful


def test_kubernetes_grace_period_covers_prestop_and_drain():
    doc = deploy_doc.DOC.read_text("utf-8")
    manifest = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert manifest, "no Kubernetes manifest in docs/deploy.md"
    text = manifest.group(1)
    grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", text).group(1))
    graceful = int(re.search(r'"--graceful-timeout", "(\d+)"', text).group(1))
    pre_stop = int(re.search(r'command: \["sleep", "(\d+)"\]', text).group(1))
    assert grace > pre_stop + graceful
    assert f"= {grace}" in doc and f"{pre_stop} + {graceful}" in doc, "the text's sum is stale"


@pytest.mark.parametrize("name", sorted(deploy_doc.configs()))
def test_every_config_block_is_used_by_a_test(name):
    tests_dir = deploy_doc.DOC.parent.parent / "tests"
    tests = "".join(p.read_text("utf-8") for p in tests_dir.glob("*.py"))
    assert f'"{name}"' in tests, f"docs/deploy.md's {name} block is not run by any test"
