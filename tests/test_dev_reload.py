"""Issue 13: --reload restarts workers when the app's code changes (development).

The app module lives in a temporary directory; the test rewrites it and the
next worker serves the new body. Both modes. Also: --preload with --reload
is refused politely (a warning, every worker imports the app itself), and an
edit that breaks the app keeps the master watching until it is fixed.
"""

import os
import time

from siesta_process import run_siesta

APP = '''"""A module the test rewrites."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"VERSION"]
'''


def write_app(path, version, broken=False):
    path.write_text(APP.replace("VERSION", version) + ("def broken(:\n" if broken else ""))
    # A later mtime than any stat the worker took, whatever the clock's grain.
    stamp = time.time() + (2 if version != "v1" else 0)
    os.utime(path, (stamp, stamp))


def wait_body(srv, want, timeout=20.0):
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        try:
            body = srv.get("/").body
        except OSError:
            body = None
        if body == want:
            return body
        time.sleep(0.1)
    return body


def test_reload_serves_changed_code(start_server, mode, tmp_path):
    module = tmp_path / "devapp.py"
    write_app(module, "v1")
    srv = start_server(
        "devapp:app", "--reload", "--chdir", str(tmp_path), "--pythonpath", str(tmp_path), mode=mode
    )
    assert wait_body(srv, b"v1") == b"v1"
    first = srv.worker_pids()
    write_app(module, "v2")
    assert wait_body(srv, b"v2") == b"v2", srv.log()
    assert srv.wait_log(r"Worker reloading: .*devapp\.py modified")
    assert srv.worker_pids() != first, "a fresh worker serves the new code"


def test_reload_ignores_preload(start_server, tmp_path):
    write_app(tmp_path / "devapp.py", "v1")
    srv = start_server(
        "devapp:app",
        "--reload",
        "--preload",
        "--chdir",
        str(tmp_path),
        "--pythonpath",
        str(tmp_path),
    )
    assert wait_body(srv, b"v1") == b"v1"
    assert srv.wait_log("--reload ignores --preload")


def test_reload_survives_an_edit_that_breaks_the_app(start_server, mode, tmp_path):
    """Probe (--reload): saving the app with a syntax error stopped the master (`App
    failed to load.`), so fixing the file did nothing. Now the error is logged, the
    master keeps running (the worker answers 500 and watches), and the fix loads. A
    load that fails at the first start still exits 4, as without --reload."""
    module = tmp_path / "devapp.py"
    write_app(module, "v0", broken=True)
    first = run_siesta(
        *("-b", "127.0.0.1:0", "--reload", "-k", mode, "--chdir", str(tmp_path)),
        *("--pythonpath", str(tmp_path), "devapp:app"),
    )
    assert first.returncode == 4, first.stderr
    assert "Reason: App failed to load." in first.stderr
    write_app(module, "v1")
    srv = start_server(
        "devapp:app", "--reload", "--chdir", str(tmp_path), "--pythonpath", str(tmp_path), mode=mode
    )
    assert wait_body(srv, b"v1") == b"v1"
    mark = srv.log_mark()
    write_app(module, "v2", broken=True)
    assert srv.wait_log(r"SyntaxError", since=mark, timeout=20.0), srv.log(mark)
    assert srv.wait_log(r"Reload: the app failed to load", since=mark, timeout=20.0)
    assert srv.alive(), srv.log(mark)
    assert srv.get("/").status == 500
    write_app(module, "v3")
    assert wait_body(srv, b"v3") == b"v3", srv.log(mark)
    assert srv.alive() and "Shutting down" not in srv.log(mark), srv.log(mark)


def test_reload_finds_an_app_module_that_comes_back(start_server, mode, tmp_path):
    """Review: a reload that could not find the app module itself (moved away, say by
    a branch switch) watched nothing, so putting it back left every request a 500.
    Where the module would be is watched now. And `import devap` in `devapp` was
    taken for the app module missing (a prefix of its name), with the same result."""
    module, helper = tmp_path / "devapp.py", tmp_path / "devhelper.py"
    helper.write_text('"""Imported by the app."""\n')
    write_app(module, "v1")
    module.write_text("import devhelper  # noqa: F401\n" + module.read_text())
    srv = start_server(
        "devapp:app", "--reload", "--chdir", str(tmp_path), "--pythonpath", str(tmp_path), mode=mode
    )
    assert wait_body(srv, b"v1") == b"v1"
    mark = srv.log_mark()
    module.rename(tmp_path / "devapp.away")
    stamp = time.time() + 2
    os.utime(helper, (stamp, stamp))  # the change that restarts the worker
    assert srv.wait_log(r"No module named 'devapp'", since=mark, timeout=20.0), srv.log(mark)
    assert srv.get("/").status == 500
    write_app(module, "v2")
    assert wait_body(srv, b"v2") == b"v2", srv.log(mark)
    mark = srv.log_mark()
    write_app(module, "v3")
    module.write_text("import devap  # noqa: F401\n" + module.read_text())
    os.utime(module, (stamp + 2, stamp + 2))
    assert srv.wait_log(r"No module named 'devap'", since=mark, timeout=20.0), srv.log(mark)
    assert srv.get("/").status == 500  # that worker serves, its watch started
    write_app(module, "v4")
    os.utime(module, (stamp + 4, stamp + 4))
    assert wait_body(srv, b"v4") == b"v4", srv.log(mark)
