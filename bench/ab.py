"""S1 A/B: two server variants, interleaved, for the cost of one feature.

`python bench/ab.py A B [--rounds N] [--duration S]` runs S1 (hello world,
wrk -c64, one worker) on server spec A, then B, then B, then A, ... (ABBA, so
neither always goes first), each on a fresh server after a 1 s warm-up, with
the same CPU pinning as run.py. It prints a Markdown table of req/s and
server CPU µs per request per round, and the median of the B ÷ A CPU ratios:
the figure to read, since CPU per request does not depend on how fast wrk is.
Example: `python bench/ab.py siesta-thread siesta-thread-metrics --rounds 8`.
To compare two builds of one spec, copy the older `python/siesta` package
to DIR/siesta and give `--a-path DIR` (it goes first on that side's
PYTHONPATH): `python bench/ab.py siesta-gevent siesta-gevent --a-path DIR`.
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from run import run_wrk  # noqa: E402
from servers import LOAD_CPUS, SERVER_CPUS, SPECS, Running, pin_load  # noqa: E402


def measure(spec, duration, logdir, path=None):
    """One S1 measurement on a fresh server: (req/s, CPU µs per request)."""
    saved = os.environ.get("PYTHONPATH")
    if path:
        os.environ["PYTHONPATH"] = path
    try:
        server = Running(spec, 1, os.path.join(logdir, f"{spec.name}.log"))
    finally:
        if path:
            os.environ.pop("PYTHONPATH")
            if saved is not None:
                os.environ["PYTHONPATH"] = saved
    try:
        run_wrk(server.port, 1)
        server.remember_tree()
        cpu0 = procs.cpu_seconds(server.pid)
        result = run_wrk(server.port, duration)
        cpu = procs.cpu_seconds(server.pid) - cpu0
    finally:
        server.stop()
    return result["req_per_s"], cpu / max(result["requests"], 1) * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--a-path", help="PYTHONPATH entry for A (another build of siesta)")
    parser.add_argument("--b-path", help="PYTHONPATH entry for B")
    args = parser.parse_args(argv)
    specs = {spec.name: spec for spec in SPECS}
    a, b = specs[args.a], specs[args.b]
    pin_load()
    print(f"pinning: server CPUs {sorted(SERVER_CPUS or [])}, load {sorted(LOAD_CPUS or [])}")
    cols = f"{a.name} req/s | {a.name} µs | {b.name} req/s | {b.name} µs"
    print(f"| round | order | {cols} | B ÷ A µs |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    with tempfile.TemporaryDirectory() as logdir:
        for i in range(args.rounds):
            sides = [("A", a, args.a_path), ("B", b, args.b_path)]
            if i % 2:
                sides.reverse()
            got = {side: measure(spec, args.duration, logdir, path) for side, spec, path in sides}
            (ra, ua), (rb, ub) = got["A"], got["B"]
            ratios.append(ub / ua)
            order = "".join(side for side, _, _ in sides)
            row = f"{ra:,.0f} | {ua:.2f} | {rb:,.0f} | {ub:.2f} | {ub / ua:.3f}"
            print(f"| {i + 1} | {order} | {row} |", flush=True)
    median = statistics.median(ratios)
    print(f"\nmedian B ÷ A CPU µs per request: {median:.3f} over {len(ratios)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
