"""A worker hands the free memory a burst left back to the system once it goes
idle (`src/worker/malloc.rs`): its idle-trim thread runs unless the deployer
set a trim threshold of glibc's own in the environment Siesta started with
(`-e` comes too late for glibc, so it does not count), and the master has none."""

import os

import pytest
from siesta_process import DEFAULT_APP, MODES, wait_until


def thread_names(pid):
    """The names of the threads of `pid`, from /proc."""
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # a thread that just ended
            continue
    return names


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "env, trims",
    [
        (None, True),
        ({"MALLOC_ARENA_MAX": "4"}, True),
        ({"MALLOC_TRIM_THRESHOLD_": "1048576"}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}, False),
        # Set by -e after start: glibc never saw it, so it is not the deployer's.
        ("-e", True),
    ],
    ids=["default", "arena-max", "trim-variable", "trim-tunable", "raw-env"],
)
def test_idle_trim_runs_unless_the_deployer_set_a_trim_threshold(start_server, mode, env, trims):
    if env == "-e":
        srv = start_server(DEFAULT_APP, "-e", "MALLOC_TRIM_THRESHOLD_=131072", mode=mode)
    else:
        srv = start_server(mode=mode, env=env)
    srv.assert_serving()
    [worker] = srv.worker_pids()
    if trims:
        # A new thread names itself once it runs: give it a moment.
        assert wait_until(lambda: "siesta-trim" in thread_names(worker), timeout=10.0), (
            thread_names(worker)
        )
    else:
        assert "siesta-trim" not in thread_names(worker), thread_names(worker)
    assert "siesta-trim" not in thread_names(srv.pid)
    srv.assert_serving()
