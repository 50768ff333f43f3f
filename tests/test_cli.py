"""The `siesta` command line: help, version, exit codes, settings precedence, stop.

Exit codes follow gunicorn (4 when the app cannot be loaded, 2 for a bad flag),
errors are one plain line and never a Python traceback, and every setting can
come from the CLI, a SIESTA_* environment variable or a -c config file, in that
order of precedence (seen through --print-config).
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import rawhttp
from siesta_process import (
    APPS_DIR,
    SIESTA,
    STOP_TIMEOUT,
    LogDrain,
    clean_env,
    run_siesta,
    stderr_lines,
    wait_until,
)

APP_ARGS = ["--chdir", str(APPS_DIR), "--pythonpath", str(APPS_DIR)]
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


def test_help():
    result = run_siesta("--help")
    assert result.returncode == 0, result.stderr
    assert "--bind" in result.stdout
    assert "--threads" in result.stdout
    assert "Traceback" not in result.stderr


def test_version():
    result = run_siesta("--version")
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+\.\d+\.\d+", result.stdout + result.stderr)


def assert_one_error_line(result, name):
    assert "Traceback" not in result.stderr, result.stderr
    naming = [line for line in result.stderr.splitlines() if name in line]
    assert len(naming) == 1, result.stderr


@pytest.mark.parametrize(
    "app,name",
    [
        ("no_such_module_zq:app", "no_such_module_zq"),
        ("router_app:no_such_attribute", "no_such_attribute"),
    ],
)
def test_bad_app_path_exits_4_with_one_error_line(app, name):
    result = run_siesta("--bind", "127.0.0.1:0", *APP_ARGS, app)
    assert result.returncode == 4, (result.returncode, result.stderr)
    assert_one_error_line(result, name)


def test_app_failing_its_own_import_exits_4():
    """The app's own traceback may be shown, but the error line names what is missing."""
    result = run_siesta("--bind", "127.0.0.1:0", *APP_ARGS, "broken_import_app:app")
    assert result.returncode == 4, (result.returncode, result.stderr)
    assert "missing_dependency_zq" in result.stderr
    # As gunicorn: the master listened, the worker failed to load, the master says why,
    # after its shutdown line, as gunicorn's halt (review, session 32: it came before).
    assert "Reason: App failed to load." in result.stderr
    shut = result.stderr.index("[ERROR] Shutting down: Master")
    assert shut < result.stderr.index("Reason: App failed to load."), result.stderr


def test_an_app_import_error_is_said_when_traceback_cannot_be_imported():
    """QA (session 35): a worker switched by -u to a user who cannot read the
    standard library failed to import the app, then failed again importing
    `traceback` to show why, and the log said only "No module named
    'traceback'". Without `traceback`, the app's own error is said alone."""
    code = (
        "import sys; sys.modules['traceback'] = None; sys.argv[0] = 'siesta'; "
        "import runpy; runpy.run_module('siesta', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--bind", "127.0.0.1:0", "broken_import_app:app"],
        cwd=str(APPS_DIR),
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4, result.stderr
    assert "ModuleNotFoundError: No module named 'missing_dependency_zq'" in result.stderr
    assert "'traceback'" not in result.stderr, result.stderr


def test_check_config_of_an_app_that_cannot_load_exits_1():
    """QA probe (session 24): --check-config exited 4 for an app that cannot be
    imported (a start's code), where gunicorn's --check-config exits 1."""
    result = run_siesta(*APP_ARGS, "--check-config", "no_such_module_zq:app")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert_one_error_line(result, "no_such_module_zq")


def test_no_app_exits_1():
    """gunicorn's "No application module specified." exits 1 (Siesta's 2 before
    session 24)."""
    result = run_siesta("-b", "127.0.0.1:0")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert_one_error_line(result, "no app given")


def test_bad_flag_exits_2():
    result = run_siesta("--no-such-flag", "router_app:app")
    assert result.returncode == 2
    assert "usage" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_bad_option_value_exits_2():
    for value in ("many", "1.5", "0x10"):  # not an int for argparse's `type=int` either
        result = run_siesta("--threads", value, "router_app:app")
        assert result.returncode == 2, (value, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--timeout", "-3"),
        ("--workers", "-2"),
        ("--backlog", "-5"),
        ("--forwarded-allow-ips", "bogus"),
        ("--proxy-protocol", "bogus"),
        ("--worker-class", "eventlet"),
        ("--umask", "01000"),
    ],
)
def test_a_value_out_of_range_exits_1(flag, value):
    """QA probe (session 24): a value the option refuses (out of range, not one
    of its words) exited 2, as a malformed command line, where the README and
    gunicorn say 1 (a bad setting, as in a config file). A number that is not
    a number at all stays 2, as argparse's own type check makes it in gunicorn."""
    result = run_siesta(flag, value, *APP_ARGS, "router_app:app", "--check-config")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert_one_error_line(result, f"argument {flag}:")


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--backlog", "99999999999999999999"),
        ("--max-requests", "99999999999999999999"),
        ("--limit-request-body", "99999999999999999999"),
        ("--threads", "10000000"),
        ("--runtime-threads", "18446744073709551615"),
    ],
)
def test_integer_too_large_exits_1_with_one_error_line(flag, value):
    """Such values gave a traceback (OverflowError) or made the worker start
    threads without end; each now names its flag and the largest it takes.
    A bad value, not a malformed command line: exit 1 (2 before session 24)."""
    result = run_siesta(flag, value, *APP_ARGS, "router_app:app", "--check-config")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert_one_error_line(result, f"{value} is more than")


def test_address_in_use():
    """As gunicorn, an address in use is tried 5 times, 1 s apart (a warning
    each time), then the start fails with one error line, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_siesta("--bind", f"127.0.0.1:{port}", *APP_ARGS, "router_app:app", timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    retries = [line for line in result.stderr.splitlines() if "retrying in 1 second" in line]
    assert len(retries) == 4, result.stderr
    assert all(f"Connection in use: 127.0.0.1:{port}" in line for line in retries), retries
    assert stderr_lines(result, "Error:") == [f"Error: Connection in use: 127.0.0.1:{port}"]


def test_an_address_freed_while_retrying_is_served():
    """A server still letting go of the port (a restart's old process) costs
    the new one a retry, not the start."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    with retrying("--bind", f"127.0.0.1:{port}") as drain:
        taken.close()
        ready = drain.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+) \((\d+)\)", 20)
        assert ready and int(ready.group(1)) == port, drain.text()
        assert_pong(("127.0.0.1", port), drain)


@contextlib.contextmanager
def started(*binds, pass_fds=(), ready="Booting worker"):
    """A siesta started with `binds`, once its stderr says `ready`: the
    stderr's drain; stopped by its pid at the end."""
    proc = subprocess.Popen(
        [str(SIESTA), *binds, *APP_ARGS, "router_app:app"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=str(APPS_DIR),
        pass_fds=pass_fds,
    )
    drain = LogDrain(proc.stderr, "siesta-stderr")
    try:
        assert drain.wait_for(ready, 20), drain.text()
        yield drain
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def retrying(*binds, pass_fds=()):
    """A siesta started with `binds`, once it says it retries an address in use."""
    return started(*binds, pass_fds=pass_fds, ready="retrying in 1 second")


def remote_addr(address):
    """REMOTE_ADDR as the app sees it for a client of `address`."""
    resp = rawhttp.request(*address, "GET", "/env")
    assert resp.status == 200, resp
    return json.loads(resp.body)["environ"]["REMOTE_ADDR"]


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_wildcard_bind_serves_ipv4_clients_too_as_gunicorns_does():
    """QA probe (session 26): `-b [::]:PORT` was IPv6 only, so `127.0.0.1:PORT`
    was refused where gunicorn serves it (the system's dual-stack default).
    An IPv4 client is named as IPv4, not `::ffff:127.0.0.1`."""
    with started("-b", "[::]:0") as drain:
        port = int(drain.wait_for(r"Listening at: http://\[::\]:(\d+) ", 5).group(1))
        assert remote_addr(("127.0.0.1", port)) == "127.0.0.1"
        assert remote_addr(("::1", port)) == "::1"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv4_and_an_ipv6_bind_of_one_port_both_serve():
    """With an IPv4 bind of the same port beside it, the IPv6 one is IPv6 only,
    so both can be bound."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with started("-b", f"127.0.0.1:{port}", "-b", f"[::]:{port}") as drain:
        assert drain.wait_for(rf"Listening at: http://\[::\]:{port} ", 5), drain.text()
        assert remote_addr(("127.0.0.1", port)) == "127.0.0.1"
        assert remote_addr(("::1", port)) == "::1"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_bind_beside_an_ipv4_metrics_bind_of_its_port():
    """Review (session 26): `-b [::]:P --metrics-bind 0.0.0.0:P` (which started
    before IPv6 binds took IPv4 clients) failed: the metrics bind's port was not
    among those that make an IPv6 bind IPv6 only."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with started("-b", f"[::]:{port}", "--metrics-bind", f"127.0.0.1:{port}") as drain:
        assert remote_addr(("::1", port)) == "::1"
        metrics = rawhttp.request("127.0.0.1", port, "GET", "/metrics")
        assert metrics.status == 200 and b"siesta_" in metrics.body, drain.text()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv4_mapped_bind_is_served():
    """`-b [::ffff:127.0.0.1]:PORT` failed with EINVAL (the socket was IPv6 only)."""
    with started("-b", "[::ffff:127.0.0.1]:0") as drain:
        port = int(
            drain.wait_for(r"Listening at: http://\[::ffff:127\.0\.0\.1\]:(\d+) ", 5).group(1)
        )
        assert remote_addr(("127.0.0.1", port)) == "127.0.0.1"


def test_a_root_path_is_a_path_from_the_root():
    """QA probe (session 26): `--root-path app` (or SCRIPT_NAME=app) made a
    SCRIPT_NAME without its leading slash, which PEP 3333 does not allow."""
    for args, env in (((("--root-path", "app")), None), ((), {"SCRIPT_NAME": "app"})):
        result = run_siesta("--print-config", *args, *APP_ARGS, "router_app:app", env=env)
        assert result.returncode == 0, result.stderr
        assert re.search(r"(?m)^root_path\s+= '/app'$", result.stdout), result.stdout


def test_an_fd_bind_that_is_not_open_is_refused_beside_a_metrics_bind():
    """Review 2 (session 26): `-b fd://3` with fd 3 closed and --metrics-bind on:
    the metrics socket took number 3 and was served as the app's bind."""
    result = run_siesta(
        "-b", "fd://3", "--metrics-bind", "127.0.0.1:0", *APP_ARGS, "router_app:app"
    )
    assert result.returncode == 1, result.stderr
    assert "Error: Cannot bind fd://3: Bad file descriptor" in result.stderr, result.stderr
    assert "Listening at" not in result.stderr


def assert_pong(address, drain):
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 200"), drain.text()


def test_check_config_good_app():
    result = run_siesta("--check-config", *APP_ARGS, "router_app:app")
    assert result.returncode == 0, result.stderr


def test_check_config_bad_app():
    result = run_siesta("--check-config", *APP_ARGS, "no_such_module_zq:app")
    assert result.returncode != 0
    assert "no_such_module_zq" in result.stderr
    assert "Traceback" not in result.stderr


def printed_threads(*args, env=None):
    result = run_siesta("--print-config", *args, *APP_ARGS, "router_app:app", env=env)
    assert result.returncode == 0, result.stderr
    match = re.search(r"(?m)^\s*threads\s*[=:]\s*(\d+)\s*$", result.stdout + result.stderr)
    assert match, result.stdout
    return int(match.group(1))


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "siesta_conf.py"
    path.write_text("threads = 3\n")
    return str(path)


def test_threads_from_config_file(config_file):
    assert printed_threads("-c", config_file) == 3


def test_threads_env_beats_config_file(config_file):
    assert printed_threads("-c", config_file, env={"SIESTA_THREADS": "5"}) == 5


def test_threads_cli_beats_env_and_config(config_file):
    assert printed_threads("-c", config_file, "--threads", "7", env={"SIESTA_THREADS": "5"}) == 7


def test_threads_env_alone():
    assert printed_threads(env={"SIESTA_THREADS": "6"}) == 6


def test_threads_default_differs_from_set_values():
    assert printed_threads() not in (3, 5, 6, 7)


def test_settings_reach_running_server(start_server, tmp_path):
    """A config-file setting and a SIESTA_* variable both apply to a real run."""
    conf = tmp_path / "run_conf.py"
    conf.write_text('root_path = "/fromconfig"\n')
    srv = start_server("router_app:app", "-c", str(conf))
    assert srv.get("/fromconfig/ping").body == b"pong"
    srv2 = start_server("router_app:app", env={"SIESTA_ROOT_PATH": "/fromenv"})
    resp = srv2.get("/fromenv/env")
    assert resp.status == 200 and b'"SCRIPT_NAME": "/fromenv"' in resp.body


def test_sigterm_exits_0(start_server, mode):
    srv = start_server("router_app:app", mode=mode)
    srv.assert_serving()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize(
    "args, mode",
    [
        (["--proxy-protocol", "router_app:app"], "auto"),
        (["--proxy-protocol", "v2", "router_app:app"], "v2"),
        (["router_app:app", "--proxy-protocol"], "auto"),
    ],
)
def test_proxy_protocol_flag_before_the_app(args, mode):
    """gunicorn's `--proxy-protocol` is a flag: the app after it stays the app."""
    result = run_siesta("--print-config", *APP_ARGS, *args)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert re.search(rf"(?m)^\s*proxy_protocol\s*[=:]\s*'?{mode}'?\s*$", out), out
    assert re.search(r"(?m)^\s*app\s*[=:]\s*'router_app:app'\s*$", out), out


def test_mistyped_proxy_protocol_mode_is_named():
    result = run_siesta("--proxy-protocol", "v3", *APP_ARGS, "router_app:app")
    assert result.returncode == 1, result.stderr  # a bad value (2 before session 24)
    assert "'v3' is not a PROXY protocol mode" in result.stderr, result.stderr


def test_a_port_in_use_is_said_in_the_error_log_file_too(tmp_path):
    """QA probe (session 23): a start that failed after the error log was opened
    (the port in use, a pid file it cannot write) said why on stderr only, which a
    daemon (-D) has pointed at /dev/null: its --error-logfile showed a start and
    nothing more. The file has the error line now, and stderr still has it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    log = tmp_path / "error.log"
    try:
        result = run_siesta(
            "--bind", f"127.0.0.1:{port}", "--error-logfile", str(log), *APP_ARGS, "router_app:app"
        )
    finally:
        holder.close()
    assert result.returncode == 1, result.stderr
    assert_one_error_line(result, f"127.0.0.1:{port}")
    assert re.search(rf"\[ERROR\] .*127\.0\.0\.1:{port}", log.read_text()), log.read_text()


def test_a_config_file_imports_from_the_working_directory(tmp_path):
    """QA probe (session 24): a gunicorn.conf.py doing `from confpkg.prod import
    workers`, with confpkg beside it, failed with ModuleNotFoundError, and so
    did `-c python:confpkg.prod`; gunicorn puts --chdir (the working directory
    by default) first on sys.path before it reads the config."""
    pkg = tmp_path / "confpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Settings package."""\n')
    (pkg / "prod.py").write_text('"""Production settings."""\nworkers = 3\n')
    (tmp_path / "gunicorn.conf.py").write_text(
        '"""Config."""\nfrom confpkg.prod import workers  # noqa: F401\n'
    )
    pp = tmp_path / "pp"
    pp.mkdir()
    (pp / "ppmod.py").write_text('"""On --pythonpath."""\nworkers = 3\n')
    for args, cwd in (
        ((), tmp_path),
        (("-c", "python:confpkg.prod"), tmp_path),
        (("--chdir", str(tmp_path), "-c", "python:confpkg.prod"), APPS_DIR),
        # A relative --pythonpath is under --chdir, as for the app (review).
        (("--chdir", str(tmp_path), "--pythonpath", "pp", "-c", "python:ppmod"), APPS_DIR),
    ):
        result = run_siesta(*args, "--print-config", "router_app:app", cwd=cwd)
        assert result.returncode == 0, (args, result.stderr)
        assert re.search(r"^workers +?= 3$", result.stdout, re.M), (args, result.stdout)


@pytest.mark.parametrize("value", ["bad:host:x", "host:99999", "a:b:1"])
def test_a_malformed_statsd_host_is_refused_at_start(value):
    """QA probe (session 24): --statsd-host bad:host:x passed --check-config and a
    start, and was only logged at run time ("StatsD is off"); gunicorn refuses it
    at start with exit 1."""
    result = run_siesta("--statsd-host", value, *APP_ARGS, "router_app:app", "--check-config")
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert_one_error_line(result, "is not HOST:PORT, HOST or unix://PATH")


def test_a_pid_file_that_cannot_be_written_stops_the_start_before_its_lines(tmp_path):
    """As gunicorn's: a pid file that cannot be written stops the start before
    `Listening at:` and `Using worker:` (the second came before the error)."""
    result = run_siesta(
        "-b",
        "127.0.0.1:0",
        "-p",
        str(tmp_path / "no-such-dir" / "s.pid"),
        *APP_ARGS,
        "router_app:app",
    )
    assert result.returncode == 1, result.stderr
    assert_one_error_line(result, "Cannot write pid file")
    assert "Listening at" not in result.stderr, result.stderr
    assert "Using worker" not in result.stderr, result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a full filesystem needs root")
def test_a_pid_file_on_a_full_disk_leaves_no_temporary_file(tmp_path):
    """QA probe (session 24): a pid file that could not be written (a full disk)
    was one clear line and exit 1, but left its temporary file behind."""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], check=True)
    try:
        with contextlib.suppress(OSError):
            (full / "fill").write_bytes(b"x" * (64 << 10))
        result = run_siesta(
            "-b", "127.0.0.1:0", "-p", str(full / "s.pid"), *APP_ARGS, "router_app:app"
        )
        assert result.returncode == 1, result.stderr
        assert_one_error_line(result, "Cannot write pid file")
        assert sorted(p.name for p in full.iterdir()) == ["fill"]
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_binds_as_gunicorn_reads_them():
    """QA probe (session 24): `-b tcp://HOST:PORT` and a bind with spaces around
    it (from a config file's string) were refused; gunicorn takes both."""
    for bind in ("tcp://127.0.0.1:0", " 127.0.0.1:0 "):
        result = run_siesta("-b", bind, *APP_ARGS, "router_app:app", "--check-config")
        assert result.returncode == 0, (bind, result.stderr)


def test_fd_binds_stay_open_while_an_address_in_use_is_tried_again():
    """Review (session 25): with -b fd://N and an address in use, the failed try
    closed the socket the caller handed over, and the next one failed on it."""
    handed = socket.socket()
    handed.bind(("127.0.0.1", 0))
    handed.listen()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    binds = ("-b", f"fd://{handed.fileno()}", "-b", f"127.0.0.1:{port}")
    try:
        with retrying(*binds, pass_fds=(handed.fileno(),)) as drain:
            taken.close()
            assert drain.wait_for(rf"Listening at: http://127\.0\.0\.1:{port} ", 20), drain.text()
            assert_pong(handed.getsockname(), drain)
    finally:
        taken.close()
        handed.close()


def test_a_file_at_a_unix_bind_path_is_refused_at_once(tmp_path):
    """Review (session 25): a regular file where the socket should go made bind
    say 'in use', tried 5 times; it is no address to wait for."""
    path = tmp_path / "notasocket"
    path.write_text("keep me\n")
    result = run_siesta("-b", f"unix:{path}", *APP_ARGS, "router_app:app")
    assert result.returncode == 1, result.stderr
    assert "retrying" not in result.stderr, result.stderr
    assert_one_error_line(result, "is not a socket")
    assert path.read_text() == "keep me\n"


def test_an_fd_bind_whose_listen_finds_its_port_taken_is_tried_again():
    """Review 2 (session 25): a socket handed over bound but not listening, whose
    port another socket listens on, failed its listen() as an address in use,
    and that try closed it: the next failed on a bad descriptor (or took over
    a socket another bind had opened under the same number)."""
    handed, holder = socket.socket(), socket.socket()
    for sock in (handed, holder):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    handed.bind(("127.0.0.1", 0))
    holder.bind(handed.getsockname())
    holder.listen()
    try:
        with retrying("-b", f"fd://{handed.fileno()}", pass_fds=(handed.fileno(),)) as drain:
            holder.close()
            assert drain.wait_for("Listening at: ", 20), drain.text()
            assert "Bad file descriptor" not in drain.text(), drain.text()
            assert_pong(handed.getsockname(), drain)
    finally:
        holder.close()
        handed.close()


@pytest.mark.parametrize(
    "module, source, code",
    [
        ("broken_import_app", None, 4),
        ("exits_at_import_app", "import sys\nsys.exit('app says no')\n", 1),
    ],
)
def test_a_preload_that_fails_leaves_no_pid_file_or_socket_file(tmp_path, module, source, code):
    """QA probe (session 29): a --preload import that failed after the bind left the
    unix socket file behind (and, for an app calling sys.exit at import, the pid file
    too); without --preload nothing was left. Both go now, whatever the failure."""
    if source:
        (tmp_path / f"{module}.py").write_text(source)
    sock, metrics, pid = tmp_path / "s.sock", tmp_path / "m.sock", tmp_path / "p.pid"
    result = run_siesta(
        "--preload", "-b", f"unix:{sock}", "--metrics-bind", f"unix:{metrics}",
        "--pid", str(pid), *APP_ARGS, "--pythonpath", str(tmp_path), f"{module}:app",
    )  # fmt: skip
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Listening at: unix:" in result.stderr, result.stderr
    left = [p.name for p in (sock, metrics, pid) if p.exists()]
    assert not left, left


def test_a_when_ready_hook_that_exits_leaves_no_pid_file_or_socket_file(tmp_path):
    """Review (session 29): a when_ready hook calling sys.exit() left the socket file
    and the pid file behind, where one that raised left nothing."""
    conf = tmp_path / "conf.py"
    conf.write_text("import sys\n\ndef when_ready(server):\n    sys.exit(2)\n")
    sock, pid = tmp_path / "s.sock", tmp_path / "p.pid"
    result = run_siesta(
        "-c", str(conf), "-b", f"unix:{sock}", "--pid", str(pid), *APP_ARGS, "router_app:app"
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert not sock.exists() and not pid.exists(), sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["-u", "-g"])
def test_ids_that_are_no_numbers_are_one_line(flag):
    """Review (session 29): "²" is a digit to str.isdigit but no number to int(): a
    traceback; and an id past the kernel's range is refused, not tried."""
    for given, words in (("\u00b2", "no such"), ("4294967295", "not a valid id")):
        result = run_siesta(flag, given, "--check-config", *APP_ARGS, "router_app:app")
        assert result.returncode == 1, (given, result.returncode, result.stderr)
        assert_one_error_line(result, words)


def test_output_that_cannot_be_written_is_one_line_not_a_traceback():
    """QA probe (session 29): --print-config into a pipe whose reader had left, and
    --check-config into a full disk, ended in a Python traceback from Siesta's own
    code. The first exits 1 quietly; the second says why in one line."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before anything was written
    try:
        proc = subprocess.run(
            [str(SIESTA), "--print-config", *APP_ARGS, "router_app:app"],
            stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE,
            env=clean_env(), text=True, timeout=30, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [str(SIESTA), "--check-config", *APP_ARGS, "router_app:app"],
            stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE,
            env=clean_env(), text=True, timeout=30, check=False,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert_one_error_line(proc, "No space left on device")


def test_a_daemon_whose_error_log_cannot_be_opened_says_so_before_detaching(tmp_path):
    """QA probe (session 29): -D with an --error-logfile in a missing directory exited
    0 and said nothing anywhere: the log was opened after detaching, where the line
    reached nobody. It is checked before -D now, as --access-logfile was."""
    errors = tmp_path / "missing" / "e.log"
    result = run_siesta(
        "-D", "--error-logfile", str(errors), "-b", "127.0.0.1:0", *APP_ARGS, "router_app:app"
    )
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert_one_error_line(result, "Cannot open error log")
    assert "No such file or directory" in result.stderr, result.stderr


def test_a_start_that_fails_at_its_bind_or_pid_file_leaves_no_socket_file(tmp_path):
    """Review (session 29): a -b that could not bind, or a pid file that could not be
    written, left the unix --metrics-bind socket file (bound first), and the pid
    file's failure the -b socket file too."""
    (tmp_path / "afile").write_text("")
    metrics, sock = tmp_path / "m.sock", tmp_path / "s.sock"
    for args in (
        ["-b", f"unix:{tmp_path / 'missing' / 's.sock'}"],
        ["-b", f"unix:{sock}", "--pid", str(tmp_path / "afile" / "p.pid")],
    ):
        result = run_siesta(*args, "--metrics-bind", f"unix:{metrics}", *APP_ARGS, "router_app:app")
        assert result.returncode == 1, (args, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"], (args, result.stderr)


def test_dev_stdout_and_stderr_are_the_streams_even_on_a_socket():
    """QA (session 30): under systemd, stdout and stderr are a socket to journald,
    and opening /dev/stdout fails there (ENXIO): `--access-logfile /dev/stdout` booted
    a worker that could not open it, and the server stopped (exit 3). /dev/stdout
    for the access log and /dev/stderr for the error log are now the streams
    themselves, as '-' is; another socket path is refused before binding (exit 1)."""
    assert _served_with_logs_on("/dev/stdout", "/dev/stderr", "/ping")
    # The other way round too (session 41: the access log on /dev/stderr was
    # refused there, exit 1; another socket path still is).
    assert _served_with_logs_on("/dev/stderr", "/dev/stdout", "/ping")


def _served_with_logs_on(access, error, target):
    """Whether siesta with its access log at `access` and error log at `error`, both
    streams a socket, writes an access line for a request for `target` there."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [str(SIESTA), "-b", "127.0.0.1:0", "--access-logfile", access]
        + ["--error-logfile", error, "router_app:app"],
        stdin=subprocess.DEVNULL,
        stdout=theirs.fileno(),
        stderr=theirs.fileno(),
        cwd=str(APPS_DIR),
        env=clean_env(),
    )
    theirs.close()
    got = b""
    try:
        ours.settimeout(15)
        while not (m := re.search(rb"Listening at: http://127\.0\.0\.1:(\d+)", got)):
            chunk = ours.recv(65536)
            assert chunk, got
            got += chunk
        assert rawhttp.request("127.0.0.1", int(m.group(1)), "GET", target).status == 200
        while f'"GET {target} HTTP/1.1" 200'.encode() not in got:
            chunk = ours.recv(65536)
            assert chunk, got
            got += chunk
    finally:
        proc.terminate()
        proc.wait(15)
        ours.close()
    return proc.returncode == 0


def test_both_logs_on_one_redirected_stream_keep_every_line(tmp_path):
    """QA (session 41): with `accesslog = errorlog = "/dev/stderr"` and stderr a file
    the shell opened without append (`2>file`), the access log opened the path anew
    and wrote from an offset of its own, and the error log's lines overwrote its
    lines (one of three requests left). Both now write through descriptor 2."""
    for stream in ("/dev/stderr", "/dev/stdout"):
        out = tmp_path / f"{stream.rsplit('/', 1)[1]}.log"
        with open(out, "w") as handle:  # O_TRUNC, no O_APPEND: as `2>file` opens it
            proc = subprocess.Popen(
                [str(SIESTA), "-b", "127.0.0.1:0", "--access-logfile", stream]
                + ["--error-logfile", stream, "router_app:app"],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
                cwd=str(APPS_DIR),
                env=clean_env(),
            )
        try:
            found = wait_until(lambda path=out: LISTENING.search(path.read_text()))
            assert found, out.read_text()
            port = int(found.group(1))
            for i in range(3):
                assert rawhttp.request("127.0.0.1", port, "GET", f"/ping?{i}").status == 200
            counted = wait_until(lambda path=out: path.read_text().count('"GET /ping?') == 3)
            assert counted, out.read_text()
        finally:
            proc.terminate()
            proc.wait(15)
        text = out.read_text()
        for i in range(3):
            assert f'"GET /ping?{i} HTTP/1.1" 200' in text, (stream, text)
        assert "Shutting down: Master" in text, (stream, text)
        assert "Listening at" in text and "Booting worker" in text, (stream, text)


def test_systemd_is_not_told_ready_before_a_preload_that_fails(tmp_path):
    """Review (session 41): READY=1 went out before --preload's import, so a
    Type=notify unit started successfully with an app that could not load."""
    (tmp_path / "broken.py").write_text('"""Cannot load."""\nraise RuntimeError("no")\n')
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.5)
        result = run_siesta(
            "-b",
            "127.0.0.1:0",
            "--preload",
            "--chdir",
            str(tmp_path),
            "broken:app",
            env={"NOTIFY_SOCKET": path},
        )
        assert result.returncode == 4, result.stderr
        with pytest.raises(TimeoutError):
            sock.recv(4096)


@pytest.mark.parametrize("abstract", [False, True])
def test_the_master_tells_systemd_it_is_ready(tmp_path, abstract):
    """QA (session 41): a unit written for gunicorn (`Type=notify`, as gunicorn's
    deploy docs have it) waits for READY=1 on $NOTIFY_SOCKET, which gunicorn's
    arbiter sends once it listens; Siesta sent nothing, so `systemctl start` hung
    until its timeout and failed."""
    name = f"siesta-notify-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name if abstract else name)
        sock.settimeout(20)
        env = clean_env()
        env["NOTIFY_SOCKET"] = "@" + name if abstract else name
        proc = subprocess.Popen(
            [str(SIESTA), "-b", "127.0.0.1:0", *APP_ARGS, "router_app:app"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        drain = LogDrain(proc.stderr, "siesta-stderr")
        try:
            said = sock.recv(4096).decode()
            assert said.split("\n")[0] == "READY=1", said
            assert drain.wait_for(r"Listening at: ", 20), drain.text()
        finally:
            proc.terminate()
            proc.wait(STOP_TIMEOUT)
    assert proc.returncode == 0, drain.text()


def test_capture_output_with_the_error_log_on_stderr_keeps_every_line(tmp_path):
    """Review (session 41): with --capture-output and the error log at /dev/stderr,
    fds 1 and 2 were pointed at the path opened again while the error log wrote
    through descriptor 2 itself: two offsets in a file the shell redirected there
    without append, and the error log's lines overwrote the app's prints."""
    (tmp_path / "printing.py").write_text(
        textwrap.dedent(
            """\
            \"\"\"Prints at import and per request, and writes to wsgi.errors.\"\"\"
            print("IMPORT-PRINT-" + "x" * 40, flush=True)


            def app(environ, start_response):
                print("REQUEST-PRINT-" + environ["QUERY_STRING"], flush=True)
                environ["wsgi.errors"].write("WSGI-ERRORS-" + environ["QUERY_STRING"] + "\\n")
                start_response("200 OK", [])
                return [b"pong"]
            """
        )
    )
    out = tmp_path / "captured.log"
    with open(out, "w") as handle:  # O_TRUNC, no O_APPEND: as `2>file` opens it
        proc = subprocess.Popen(
            [str(SIESTA), "-b", "127.0.0.1:0", "--capture-output", "--error-logfile"]
            + ["/dev/stderr", "--access-logfile", "/dev/stderr", "--chdir", str(tmp_path)]
            + ["printing:app"],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            env={**clean_env(), "PYTHONUNBUFFERED": "1"},
        )
    try:
        found = wait_until(lambda: LISTENING.search(out.read_text()))
        assert found, out.read_text()
        port = int(found.group(1))
        for i in range(3):
            assert rawhttp.request("127.0.0.1", port, "GET", f"/ping?{i}").status == 200
        assert wait_until(lambda: out.read_text().count('"GET /ping?') == 3), out.read_text()
    finally:
        proc.terminate()
        proc.wait(15)
    text = out.read_text()
    lines = ["Starting siesta", "Listening at", "Booting worker", "Shutting down: Master"]
    lines += ["IMPORT-PRINT-" + "x" * 40]
    lines += [f"{what}{i}" for i in range(3) for what in ("REQUEST-PRINT-", "WSGI-ERRORS-")]
    lines += [f'"GET /ping?{i} HTTP/1.1" 200' for i in range(3)]
    for line in lines:
        assert line in text, (line, text)


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_closed_standard_descriptor_is_dev_null_not_the_next_file(tmp_path, closed):
    """Review (session 41): with fd 1 (or 2) closed at launch (`1>&-`), the next file
    the worker opened took its number (an epoll descriptor), and the access log at
    /dev/stdout wrote into it; `sys.stdout` was None, and the worker's flush of it
    at exit raised, climbing into the master's code it was forked from. Such a
    descriptor is /dev/null from the start: the server serves and stops cleanly."""
    fd = 1 if closed == "stdout" else 2
    log = tmp_path / "error.log"
    proc = subprocess.Popen(
        [str(SIESTA), "-b", "127.0.0.1:0", "--access-logfile", f"/dev/{closed}"]
        + ["--error-logfile", str(log), "--max-requests", "2", *APP_ARGS, "router_app:app"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
        preexec_fn=lambda: os.close(fd),
    )
    try:
        found = wait_until(lambda: log.exists() and LISTENING.search(log.read_text()))
        assert found, log.read_text() if log.exists() else ""
        port = int(found.group(1))
        for i in range(5):  # past --max-requests: a worker leaves and another serves
            assert rawhttp.request("127.0.0.1", port, "GET", f"/ping?{i}").status == 200
    finally:
        proc.terminate()
        code = proc.wait(15)
    text = log.read_text()
    assert code == 0, text
    assert "Cannot write the access log" not in text, text
    assert "Cannot start a worker" not in text and "Traceback" not in text, text
