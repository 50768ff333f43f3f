"""S1 in instructions: what one hello request costs a Siesta worker, counted by callgrind.

`python bench/instructions.py A B [--rounds N]` runs server spec A and then
B (ABAB...) under `valgrind --tool=callgrind`, each fresh: it warms the
worker up with wrk, zeroes callgrind's counters, loads it with wrk (8
connections) for `--duration` seconds, dumps the counters and divides the
worker's user-space instructions by the requests wrk completed. Counting
instructions instead of CPU time makes a small cost visible on a machine
whose speed drifts by ±15% from one second to the next (a shared VM): the
count does not depend on how fast the CPU happens to be. It does not see the
kernel's share (system calls are the same on both sides of an A/B of a
user-space feature) nor cache effects, so it complements `ab.py`, which
measures time. Needs `valgrind` (`apt-get install valgrind`) and the
repo's `.venv` with Siesta built. Example:
`python bench/instructions.py siesta-thread siesta-thread-metrics --rounds 2`.
`--keep DIR` keeps the callgrind dumps there, to compare function by
function with `callgrind_annotate`. For a peer (no line names its worker)
the whole process tree is counted: exact for one-process servers (the bare
hyper ceiling, bjoern), a master's share included for the others. A peer
must print a `Listening at:` line (`bench/launch.py` does for those it
starts).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from run import run_wrk  # noqa: E402
from servers import LISTENING as LISTENING_LINE  # noqa: E402
from servers import SPECS  # noqa: E402

LISTENING = re.compile(rb"Listening at: http://127\.0\.0\.1:(\d+)")
WORKER = re.compile(rb"Booting worker with pid: (\d+)")


def wait_for(path, pattern, timeout):
    """The first match of `pattern` in the log at `path`, waiting up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as handle:
            found = pattern.search(handle.read())
        if found:
            return int(found.group(1))
        time.sleep(0.5)
    raise RuntimeError(f"no {pattern.pattern!r} in {path} within {timeout} s")


def count(spec, duration, connections, workdir, tag):
    """User-space instructions per hello request of one fresh worker of `spec`
    (of its whole process tree, for a peer)."""
    argv = spec.argv(0, 1)
    log = os.path.join(workdir, f"{tag}.log")
    out = os.path.join(workdir, f"{tag}.%p")
    # The `siesta` script runs under the venv's Python: give valgrind that
    # interpreter and the module, so it never has to follow a shebang.
    if os.path.basename(argv[0]) == "siesta":
        program = [os.path.join(os.path.dirname(argv[0]), "python"), "-m", "siesta"]
    else:
        program = [argv[0]]
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out}",
        *program,
        *argv[1:],
    ]
    with open(log, "wb") as handle:
        server = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
    try:
        port = wait_for(log, LISTENING, 120)
        # Siesta's worker alone; a peer's whole tree (one process for the
        # bare hyper ceiling and bjoern; a master's share included for the
        # others, which have no line naming their worker), taken once the
        # warm-up has been served, so a master that forks after its
        # `Listening at:` line has its workers by then.
        worker = wait_for(log, WORKER, 120) if "siesta" in program else None
        run_wrk(port, 5, connections=connections)
        pids = [worker] if worker else procs.tree_pids(server.pid)
        for pid in pids:
            subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
        result = run_wrk(port, duration, connections=connections)
        total = 0
        for pid in pids:
            subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
            dumps = [f for f in os.listdir(workdir) if f.startswith(f"{tag}.{pid}.")]
            if not dumps:
                raise RuntimeError(f"callgrind wrote no dump for process {pid}")
            with open(os.path.join(workdir, sorted(dumps)[-1])) as handle:
                summary = next(line for line in handle if line.startswith("summary:"))
            total += int(summary.split()[1])
    finally:
        for pid in reversed(procs.tree_pids(server.pid)):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        server.wait(timeout=30)
    return total / max(result["requests"], 1), result["requests"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--keep", help="a directory to keep the callgrind dumps in")
    args = parser.parse_args(argv)
    specs = {spec.name: spec for spec in SPECS}
    a, b = specs[args.a], specs[args.b]
    for spec in (a, b):
        if spec.ready is not LISTENING_LINE:
            parser.error(f"{spec.name} prints no 'Listening at:' line to find its port by")
    print(f"| round | {a.name} instructions/request | {b.name} instructions/request | B ÷ A |")
    print("|---|---|---|---|")
    ratios = []
    with tempfile.TemporaryDirectory() as workdir:
        for i in range(args.rounds):
            (ia, _), (ib, _) = (
                count(a, args.duration, args.connections, workdir, f"{i}a"),
                count(b, args.duration, args.connections, workdir, f"{i}b"),
            )
            ratios.append(ib / ia)
            print(f"| {i + 1} | {ia:,.0f} | {ib:,.0f} | {ib / ia:.4f} |", flush=True)
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for name in os.listdir(workdir):
                shutil.copy(os.path.join(workdir, name), args.keep)
    print(f"\nmedian B ÷ A instructions per request: {statistics.median(ratios):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
