"""nginx and HAProxy in front of Siesta, for tests: installed if missing, started, stopped by PID.

`require(program)` finds `nginx` (with its stream module) or `haproxy`, and
when it is missing and we are root installs Debian's packages with apt-get
(`apt-get update` once per session); only when that is impossible does the
test skip, saying why. `Nginx` and `HAProxy` run one process each with a
config generated into the test's tmp dir (no default path of the system's
is used: `-p tmpdir -c conf -g 'daemon off; pid ...; error_log ...;'` and
`haproxy -f conf -db`). Their listening sockets are opened here on port 0
and handed over (nginx's `NGINX` variable, HAProxy's `bind fd@N`), so no
port is guessed. Readiness is a bounded connect loop; stop is TERM to the
PID, then KILL.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

READY_TIMEOUT = 15.0
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
PACKAGES = {"nginx": ["nginx", "libnginx-mod-stream"], "haproxy": ["haproxy"]}
_apt_updated = False


def _installed(program):
    if shutil.which(program) is None:
        return False
    return program != "nginx" or os.path.exists(STREAM_MODULE)


def require(program):
    """The path of `program`, installing its Debian packages when missing (root only)."""
    global _apt_updated
    if not _installed(program):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"{program} is not installed and cannot be (needs root and apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            if not _apt_updated:
                subprocess.run(
                    ["apt-get", "update"], env=env, capture_output=True, check=True, timeout=300
                )
                _apt_updated = True
            subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES[program]],
                env=env,
                capture_output=True,
                check=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"{program} is not installed and apt-get failed: {exc}")
    if not _installed(program):
        pytest.skip(f"{program} still missing after apt-get install {PACKAGES[program]}")
    return shutil.which(program)


def listening_socket(host="127.0.0.1"):
    """A listening TCP socket on a free port, to hand to a proxy."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(512)
    s.set_inheritable(True)
    return s


def wait_accepting(port, proc, log):
    """Bounded: until 127.0.0.1:port answers a connect (the proxy is up)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"proxy did not come up (exit {proc.poll()}):\n{read(log)}")


def _fill(text, names):
    """`{name}` placeholders replaced (configs are full of other braces)."""
    for name, value in names.items():
        text = text.replace("{" + name + "}", value)
    return text


def read(path):
    try:
        return Path(path).read_text("utf-8", "replace")
    except OSError:
        return ""


class Proxy:
    """One proxy process with its listening sockets (`ports`) and logs."""

    def __init__(self, cmd, env, sockets, log):
        self.log_path = log
        self.sockets = sockets
        self.ports = [s.getsockname()[1] for s in sockets]
        self.port = self.ports[0]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=[s.fileno() for s in sockets],
            )
        for s in sockets:
            s.close()  # the proxy has its copy
        wait_accepting(self.port, self.proc, log)

    def log(self):
        return read(self.log_path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def nginx(tmp, http="", main="", listeners=1):
    """nginx with `http` (the http block's contents) and `main` (top-level blocks
    such as `stream { ... }`); `{listen0}`... in them name the handed-over
    sockets (`listen {listen0};`)."""
    binary = require("nginx")
    tmp = Path(tmp)
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    sockets = [listening_socket() for _ in range(listeners)]
    names = {f"listen{i}": f"127.0.0.1:{s.getsockname()[1]}" for i, s in enumerate(sockets)}
    temp_paths = (
        " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi"))
        + f" uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;"
    )
    conf = "\n".join(
        [
            "user root;" if os.geteuid() == 0 else "",
            f"load_module {STREAM_MODULE};" if "stream {" in main else "",
            "worker_processes 1;",
            "events { worker_connections 1024; }",
            "http {",
            f"  {temp_paths}",
            f"  access_log {tmp}/logs/access.log;",
            _fill(http, names),
            "}",
            _fill(main, names),
        ]
    )
    path = tmp / "nginx.conf"
    path.write_text(conf)
    env = dict(os.environ, NGINX="".join(f"{s.fileno()};" for s in sockets))
    directives = f"daemon off; pid {tmp}/nginx.pid; error_log {tmp}/logs/error.log info;"
    cmd = [binary, "-p", str(tmp), "-c", str(path), "-g", directives]
    proxy = Proxy(cmd, env, sockets, tmp / "logs" / "stdout.log")
    proxy.error_log = tmp / "logs" / "error.log"
    return proxy


def haproxy(tmp, config):
    """HAProxy running `config`, whose `{listen0}` is the handed-over socket (`bind {listen0}`)."""
    binary = require("haproxy")
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    sock = listening_socket()
    path = tmp / "haproxy.cfg"
    path.write_text(_fill(config, {"listen0": f"fd@{sock.fileno()}"}))
    cmd = [binary, "-f", str(path), "-db"]
    return Proxy(cmd, dict(os.environ), [sock], tmp / "haproxy.log")
