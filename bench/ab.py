"""S1 A/B: two server variants, interleaved, for the cost of one feature.

`python bench/ab.py A B [--rounds N] [--duration S]` runs S1 (hello world,
wrk -c64, one worker) on server spec A, then B, then B, then A, ... (ABBA, so
neither always goes first), each on a fresh server after a 1 s warm-up, with
the same CPU pinning as run.py. It prints a Markdown table of req/s and
server CPU µs per request per round, and the median of the B ÷ A CPU ratios:
the figure to read, since CPU per request does not depend on how fast wrk is.
Example: `python bench/ab.py siesta-thread siesta-thread-metrics --rounds 8`.
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


def measure(spec, duration, logdir):
    """One S1 measurement on a fresh server: (req/s, CPU µs per request)."""
    server = Running(spec, 1, os.path.join(logdir, f"{spec.name}.log"))
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
            first, second = (a, b) if i % 2 == 0 else (b, a)
            got = {}
            for spec in (first, second):
                got[spec.name] = measure(spec, args.duration, logdir)
            (ra, ua), (rb, ub) = got[a.name], got[b.name]
            ratios.append(ub / ua)
            order = "AB" if first is a else "BA"
            row = f"{ra:,.0f} | {ua:.2f} | {rb:,.0f} | {ub:.2f} | {ub / ua:.3f}"
            print(f"| {i + 1} | {order} | {row} |", flush=True)
    median = statistics.median(ratios)
    print(f"\nmedian B ÷ A CPU µs per request: {median:.3f} over {len(ratios)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
