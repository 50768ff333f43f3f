"""Bad setting values from an outside probe: one error line, gunicorn's exit code.

Each value here once got past the settings table and failed later: None in a
config file reached Rust as a hole in a typed field (a traceback at start, a
dead master on HUP, 500s in gevent mode), -e and --chdir mistakes exited 4 as
if the app could not be imported, and --check-config said "Configuration OK"
to values a start refuses. Every test runs the real `siesta` command.
"""

import re

import pytest
from siesta.config import SETTINGS, _addresses
import siesta_process
from siesta_process import APPS_DIR, run_siesta, stderr_lines

APP = "router_app:app"
APP_ARGS = ["--pythonpath", str(APPS_DIR)]

# None is gunicorn's false, empty list or empty address list for these (as its
# validators take it), and the unset value where the default is None.
NONE_IS_EMPTY = [
    s.name
    for s in SETTINGS
    if s.file and s.name != "bind" and (s.flag or s.append or s.type is _addresses)
]
# `errorlog = None` is stderr, as gunicorn starts with it (session 24).
MAY_BE_NONE = [s.name for s in SETTINGS if s.file and s.default is None] + ["error_logfile"]
# Every other setting a config file may set: None is not a value.
NOT_NONE = [s.name for s in SETTINGS if s.file and s.name not in NONE_IS_EMPTY + MAY_BE_NONE]


def error_lines(result):
    return stderr_lines(result, "Error:")


def assert_one_error(result, code, *words):
    """Exit `code`, no traceback, and one `Error:` line holding every word."""
    return siesta_process.assert_one_error(result, code, *words, prefix="Error:")


def config(tmp_path, text, name="conf.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", NOT_NONE)
def test_none_in_a_config_file_is_refused(tmp_path, name):
    """Probe item 1: `timeout = None` (or any setting whose default is not None)
    passed --check-config and then the start died with a traceback from
    configure_log (TypeError: failed to extract field Settings.timeout)."""
    conf = config(tmp_path, f"{name} = None\n")
    result = run_siesta("-c", conf, *APP_ARGS, "--check-config", APP)
    assert_one_error(result, 1, f"{name} from {conf}: None is not allowed")


@pytest.mark.parametrize("name", ["timeout", "keepalive", "max_requests", "backlog"])
def test_none_stops_a_start_with_one_line(tmp_path, name):
    """Probe item 1, at a real start, with gunicorn's names too (keepalive)."""
    conf = config(tmp_path, f"import os\n{name} = os.environ.get('SIESTA_PROBE_UNSET')\n")
    result = run_siesta("-c", conf, "-b", "127.0.0.1:0", *APP_ARGS, APP)
    assert_one_error(result, 1, f" from {conf}: None is not allowed")
    assert "Listening at" not in result.stderr


def test_gevent_worker_connections_none_is_refused(tmp_path):
    """Probe item 3: gevent mode with `worker_connections = None` answered every
    request 500 (None compared with an int in _gevent.py) and hung on TERM."""
    conf = config(tmp_path, 'worker_class = "gevent"\nworker_connections = None\n')
    result = run_siesta("-c", conf, "-b", "127.0.0.1:0", *APP_ARGS, APP)
    assert_one_error(result, 1, f"worker_connections from {conf}: None is not allowed")


def test_settings_whose_default_is_none_take_none(tmp_path):
    """None stays a value where it is the default (paths, optional names)."""
    conf = config(tmp_path, "".join(f"{name} = None\n" for name in MAY_BE_NONE))
    result = run_siesta("-c", conf, *APP_ARGS, "--check-config", APP)
    assert result.returncode == 0, result.stderr


def test_none_is_false_or_empty_where_gunicorn_takes_it_so(tmp_path):
    """Review: `raw_env = None`, `forwarded_allow_ips = None` and None for a flag
    work in gunicorn (false, empty); they were refused."""
    assert {"raw_env", "forwarded_allow_ips", "preload_app"} <= set(NONE_IS_EMPTY)
    conf = config(tmp_path, "".join(f"{name} = None\n" for name in NONE_IS_EMPTY))
    result = run_siesta("-c", conf, *APP_ARGS, "--print-config", APP)
    assert result.returncode == 0, result.stderr
    assert re.search(r"(?m)^\s*preload_app\s*=\s*False\s*$", result.stdout), result.stdout
    assert re.search(r"(?m)^\s*raw_env\s*=\s*\[\]\s*$", result.stdout), result.stdout


def test_bad_env_on_the_command_line_is_a_usage_error():
    """Probe item 4: `-e A` exited 4 (app load error); it is a bad flag value: exit 1
    since session 24, as a bad value in a config file (a malformed command line,
    `--threads many`, is 2)."""
    result = run_siesta("-e", "A", "-b", "127.0.0.1:0", *APP_ARGS, APP)
    assert_one_error(result, 1, "--env", "'A' is not KEY=VALUE")


@pytest.mark.parametrize("text", ['raw_env = ["A"]\n', 'raw_env = ["=1"]\n'])
def test_bad_raw_env_in_a_config_file_names_the_file(tmp_path, text):
    """Probe item 4: a bad raw_env in a config file exited 4, blaming `-e`."""
    conf = config(tmp_path, text)
    result = run_siesta("-c", conf, "-b", "127.0.0.1:0", *APP_ARGS, APP)
    line = assert_one_error(result, 1, f"raw_env from {conf}", "is not KEY=VALUE")
    assert "-e" not in line


def test_raw_env_as_a_dict_sets_the_variables(tmp_path):
    """Probe item 4: `raw_env = {"A": "1"}` was refused as `Invalid -e value 'A'`."""
    conf = config(tmp_path, 'raw_env = {"A": "1", "B": "x=y"}\n')
    result = run_siesta("-c", conf, *APP_ARGS, "--print-config", APP)
    assert result.returncode == 0, result.stderr
    assert re.search(r"(?m)^raw_env\s*= \['A=1', 'B=x=y'\]$", result.stdout), result.stdout


@pytest.mark.parametrize("where", ["cli", "file"])
def test_missing_chdir_is_a_config_error(tmp_path, where):
    """Probe item 4: `--chdir /missing/dir` exited 4 (app load error); now exit 1,
    naming where the setting came from."""
    missing = str(tmp_path / "missing" / "dir")
    if where == "cli":
        args, source = ["--chdir", missing], "the command line"
    else:
        source = config(tmp_path, f"chdir = {missing!r}\n")
        args = ["-c", source]
    result = run_siesta(*args, "-b", "127.0.0.1:0", *APP_ARGS, APP)
    assert_one_error(result, 1, f"chdir from {source}", missing)


@pytest.mark.parametrize(
    "args",
    [
        ["--metrics-bind", "127.0.0.1:abc"],
        ["--user", "nosuchuser_zq"],
        ["--group", "nosuchgroup_zq"],
        ["--error-logfile", "/nonexistent_zq/error.log"],
        ["--chdir", "/nonexistent_zq"],
        ["-e", "A"],
    ],
)
def test_check_config_refuses_what_a_start_refuses(args):
    """Probe item 5: --check-config said "Configuration OK" (exit 0) to
    --metrics-bind 127.0.0.1:abc and --user nosuchuser, which a start refuses;
    now both give the same error line and exit code."""
    start = run_siesta(*args, "-b", "127.0.0.1:0", *APP_ARGS, APP)
    check = run_siesta(*args, "-b", "127.0.0.1:0", *APP_ARGS, "--check-config", APP)
    assert start.returncode in (1, 2), start.stderr
    assert "Listening at" not in start.stderr
    assert check.returncode == start.returncode, (check.stderr, start.stderr)
    assert error_lines(check) == error_lines(start), (check.stderr, start.stderr)
    assert len(error_lines(check)) == 1 and "Traceback" not in check.stderr, check.stderr


def test_check_config_refuses_an_access_log_no_worker_can_open():
    """Probe item 5: a start exits 3 (no worker can open the access log); so does
    --check-config now, instead of "Configuration OK". Since session 24 both say it
    before binding, with exit 1, as gunicorn (whose master opens the log)."""
    args = ["--access-logfile", "/nonexistent_zq/access.log", "-b", "127.0.0.1:0", *APP_ARGS]
    for extra in (["--check-config"], []):
        result = run_siesta(*args, *extra, APP)
        assert_one_error(result, 1, "Cannot open access log /nonexistent_zq/access.log")
        assert "Listening at" not in result.stderr, result.stderr
    # QA (session 34): an empty path passed the check, then no worker could boot (3).
    for extra in (["--check-config"], []):
        result = run_siesta("--access-logfile", "", "-b", "127.0.0.1:0", *APP_ARGS, *extra, APP)
        assert_one_error(result, 1, "Cannot open access log '': the path is empty")
        assert "Listening at" not in result.stderr, result.stderr


def test_address_list_settings_take_a_list(tmp_path):
    """A list in forwarded_allow_ips (as gunicorn takes it) gave the garbled
    `"['10.0.0.1'" is not an IP address`."""
    conf = config(tmp_path, 'forwarded_allow_ips = ["10.0.0.1", "10.0.0.2"]\n')
    result = run_siesta("-c", conf, *APP_ARGS, "--print-config", APP)
    assert result.returncode == 0, result.stderr
    assert "forwarded_allow_ips      = '10.0.0.1,10.0.0.2'" in result.stdout, result.stdout
    conf = config(tmp_path, 'proxy_allow_ips = ["10.0.0.1", "nope"]\n', "bad.py")
    result = run_siesta("-c", conf, *APP_ARGS, "--print-config", APP)
    line = assert_one_error(result, 1, f"proxy_allow_from from {conf}", "nope")
    assert "[" not in line, line


def test_an_empty_bind_list_is_refused(tmp_path):
    """Review: `bind = []` (or `bind = None` before it was refused) started a server
    that listened on nothing; a start and --check-config now refuse it."""
    conf = config(tmp_path, "bind = []\n")
    for extra in (["--check-config"], []):
        result = run_siesta("-c", conf, *APP_ARGS, *extra, APP)
        assert_one_error(result, 1, "bind: no address to listen on")


def test_errorlog_none_is_stderr(tmp_path):
    """QA probe (session 24): `errorlog = os.environ.get("ERROR_LOG")` with the
    variable unset was refused (None is not allowed); gunicorn starts. It is
    stderr."""
    conf = config(tmp_path, "import os\nerrorlog = os.environ.get('SIESTA_PROBE_UNSET')\n")
    result = run_siesta("-c", conf, *APP_ARGS, "--print-config", APP)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^error_logfile +?= '-'$", result.stdout, re.M), result.stdout
