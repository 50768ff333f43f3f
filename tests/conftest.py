"""Pytest fixtures for the end-to-end suite: servers per mode and time limits.

`server` is a per-module server of the default app (router_app:app), parametrized
over MODES and restarted if a test left it dead; `start_server(app, *args,
mode=..., env=None)` starts extra servers that stop after the test; `mode` runs a
test once per execution mode.  Process handling lives in siesta_process.py, raw
HTTP in rawhttp.py.
"""

import pytest
from siesta_process import DEFAULT_APP, MODES, SiestaServer


class SharedServer:
    """A module-wide server that is started again if a test left it dead."""

    def __init__(self, mode, record_dir):
        self.mode, self.record_dir = mode, record_dir
        self.current = None

    def get(self):
        if self.current is None or not self.current.alive():
            self.current = SiestaServer(DEFAULT_APP, [], self.mode, self.record_dir)
        return self.current

    def stop(self):
        if self.current is not None:
            self.current.stop()


@pytest.fixture(scope="module", params=MODES)
def _shared_server(request, tmp_path_factory):
    shared = SharedServer(request.param, tmp_path_factory.mktemp(f"records-{request.param}"))
    yield shared
    shared.stop()


@pytest.fixture
def server(_shared_server):
    """The default test app (router_app:app) served in each mode of MODES."""
    return _shared_server.get()


@pytest.fixture(params=MODES)
def mode(request):
    """Each execution mode, for tests that start their own server with start_server."""
    return request.param


@pytest.fixture
def start_server(tmp_path):
    """Factory: start_server(app, *args, mode=..., env=None, preexec=None) -> SiestaServer,
    stopped after. `preexec` runs in the server's process before it starts."""
    started = []

    def start(app=DEFAULT_APP, *args, mode=MODES[0], env=None, preexec=None):
        srv = SiestaServer(app, args, mode, tmp_path / f"records-{len(started)}", env, preexec)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long transfers (still run by default)")
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time limit")


def pytest_collection_modifyitems(config, items):
    """Give every test a time limit (pytest-timeout) unless it sets its own."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            limit = 300 if item.get_closest_marker("slow") else 90
            item.add_marker(pytest.mark.timeout(limit))
