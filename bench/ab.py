"""S1 A/B: two server variants, interleaved, for the cost of one feature.

`python bench/ab.py A B [--rounds N] [--duration S]` starts server spec A and
server spec B side by side (both warmed up for 1 s), then loads them in turn
with S1 (hello world, wrk -c64) in bursts of `--duration` seconds: A, B, B,
A, ... (ABBA, so neither always goes first). Both servers stay up the whole
time, so a slow patch of the machine (this kind of VM's neighbours) hits
both sides of a pair alike instead of one server's whole run. It prints a
Markdown table of req/s and server CPU µs per request per burst pair
(`procs.cpu_ns`, from the threads' schedstat), and the median of the
B ÷ A ratios: the CPU one is the figure to read, since CPU per request does
not depend on how fast wrk is. Servers are pinned as in run.py.
Example: `python bench/ab.py siesta-thread siesta-thread-metrics --rounds 20`.
`--together P` loads A and B at the same time instead, each by its own
wrk, on P fresh pairs of servers (`compare_together`, S10's engine): the
tightest of the three. `--restart` runs each measurement on a fresh server
instead (the older way). To compare two builds of one
spec, copy the older `python/siesta` package to DIR/siesta and give
`--a-path DIR` (it goes first on that side's PYTHONPATH):
`python bench/ab.py siesta-gevent siesta-gevent --a-path DIR`. Build both
sides the same way (`cargo build --release`, the `.so` copied in as
`_siesta.abi3.so`; `maturin develop` builds differently enough to show),
each in its own `CARGO_TARGET_DIR`: in a shared one, cargo may leave the
first side's library in place for the second (same package name and
version), and that side's Python then runs against the wrong library.
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from run import run_wrk, start_wrk, wrk_result  # noqa: E402
from servers import LOAD_CPUS, SERVER_CPUS, SPECS, Running, pin_load  # noqa: E402


def start(spec, logdir, tag, path=None):
    """A server for `spec`, with `path` first on its PYTHONPATH when given."""
    saved = os.environ.get("PYTHONPATH")
    if path:
        os.environ["PYTHONPATH"] = path
    try:
        return Running(spec, 1, os.path.join(logdir, f"{tag}-{spec.name}.log"))
    finally:
        if path:
            os.environ.pop("PYTHONPATH")
            if saved is not None:
                os.environ["PYTHONPATH"] = saved


def burst(server, duration):
    """One S1 burst on a running server: (req/s, CPU µs per request)."""
    cpu0 = procs.cpu_ns(server.pid)
    result = run_wrk(server.port, duration)
    cpu = procs.cpu_ns(server.pid) - cpu0
    return result["req_per_s"], cpu / max(result["requests"], 1) / 1e3


def measure_fresh(spec, duration, logdir, tag, path=None):
    """One S1 measurement on a fresh server (`--restart`)."""
    server = start(spec, logdir, tag, path)
    try:
        run_wrk(server.port, 1)
        server.remember_tree()
        return burst(server, duration)
    finally:
        server.stop()


def interleave(a, b, rounds, warm, measure, paths=(None, None), out=print, digits=2):
    """Starts A and B side by side, warms each with `warm(server)`, then calls
    `measure(server)` -> (rate, cost) on them in ABBA order for `rounds` pairs.
    Returns the rows `(order, (a rate, a cost), (b rate, b cost))`."""
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        servers = {}
        try:
            for side, spec, path in (("A", a, paths[0]), ("B", b, paths[1])):
                servers[side] = start(spec, logdir, side, path)
                warm(servers[side])
                servers[side].remember_tree()
            for i in range(rounds):
                sides = ["A", "B"] if i % 2 == 0 else ["B", "A"]
                got = {side: measure(servers[side]) for side in sides}
                rows.append(("".join(sides), got["A"], got["B"]))
                out(row_text(i + 1, rows[-1], digits))
        finally:
            for server in servers.values():
                server.stop()
    return rows


def _sides(a, b, paths, i):
    """`(side, spec, path)` for A and B, B first on odd `i`."""
    sides = [("A", a, paths[0]), ("B", b, paths[1])]
    return sides if i % 2 == 0 else sides[::-1]


def compare(a, b, rounds, duration, paths=(None, None), restart=False, out=print):
    """Runs the A/B; returns the rows `(order, (a req/s, a µs), (b req/s, b µs))`."""
    if not restart:
        return interleave(
            a,
            b,
            rounds,
            lambda server: run_wrk(server.port, 1),
            lambda server: burst(server, duration),
            paths,
            out,
        )
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for i in range(rounds):
            sides = _sides(a, b, paths, i)
            got = {
                side: measure_fresh(spec, duration, logdir, f"{i}{side}", path)
                for side, spec, path in sides
            }
            rows.append(("".join(side for side, _, _ in sides), got["A"], got["B"]))
            out(row_text(i + 1, rows[-1]))
    return rows


def compare_together(a, b, pairs, rounds, duration, paths=(None, None), out=print):
    """A and B loaded at the same time, each by its own wrk, for `rounds`
    bursts of `duration` s, on `pairs` fresh pairs of servers (the side
    started first alternating). Both workers share the server CPU second by
    second, so a slow patch of this VM (its speed moves by 10-30% over a few
    seconds) slows both alike: the CPU-per-request ratio of two identical
    servers then stays within about 1.5%, where loading them in turn
    (`compare`) leaves it spread by ±10%. Returns the rows
    `(order, (a req/s, a µs), (b req/s, b µs))`."""
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for p in range(pairs):
            sides = _sides(a, b, paths, p)
            servers = {}
            try:
                for side, spec, path in sides:
                    servers[side] = start(spec, logdir, f"{p}{side}", path)
                    run_wrk(servers[side].port, 1)
                    servers[side].remember_tree()
                for _ in range(rounds):
                    cpu0 = {side: procs.cpu_ns(server.pid) for side, server in servers.items()}
                    running = {
                        side: start_wrk(server.port, duration) for side, server in servers.items()
                    }
                    got = {}
                    for side, proc in running.items():
                        result = wrk_result(proc, duration)
                        cpu = procs.cpu_ns(servers[side].pid) - cpu0[side]
                        got[side] = (
                            result["req_per_s"],
                            cpu / max(result["requests"], 1) / 1e3,
                        )
                    rows.append(("".join(side for side, _, _ in sides), got["A"], got["B"]))
                    out(row_text(len(rows), rows[-1]))
            finally:
                for server in servers.values():
                    server.stop()
    return rows


def row_text(n, row, digits=2):
    order, (ra, ua), (rb, ub) = row
    cost = f"{{:.{digits}f}}"
    return (
        f"| {n} | {order} | {ra:,.0f} | {cost.format(ua)} | {rb:,.0f} | {cost.format(ub)} "
        f"| {ub / ua:.3f} |"
    )


def medians(rows):
    """(median B ÷ A CPU µs per request, median B ÷ A req/s) over the rows."""
    cpu = statistics.median(b[1] / a[1] for _, a, b in rows)
    rate = statistics.median(b[0] / a[0] for _, a, b in rows if a[0])
    return cpu, rate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--duration", type=int, default=2)
    parser.add_argument("--restart", action="store_true", help="a fresh server per measurement")
    parser.add_argument(
        "--together",
        type=int,
        metavar="PAIRS",
        help="load A and B at once, on PAIRS fresh server pairs of --rounds bursts each",
    )
    parser.add_argument("--a-path", help="PYTHONPATH entry for A (another build of siesta)")
    parser.add_argument("--b-path", help="PYTHONPATH entry for B")
    args = parser.parse_args(argv)
    if args.together and args.restart:
        parser.error("--together and --restart are two different ways: pick one")
    specs = {spec.name: spec for spec in SPECS}
    a, b = specs[args.a], specs[args.b]
    pin_load()
    print(f"pinning: server CPUs {sorted(SERVER_CPUS or [])}, load {sorted(LOAD_CPUS or [])}")
    cols = f"{a.name} req/s | {a.name} µs | {b.name} req/s | {b.name} µs"
    print(f"| round | order | {cols} | B ÷ A µs |")
    print("|---|---|---|---|---|---|---|")

    def out(line):
        print(line, flush=True)

    if args.together:
        paths = (args.a_path, args.b_path)
        rows = compare_together(a, b, args.together, args.rounds, args.duration, paths, out)
    else:
        rows = compare(
            a, b, args.rounds, args.duration, (args.a_path, args.b_path), args.restart, out
        )
    cpu, rate = medians(rows)
    print(f"\nmedian B ÷ A over {len(rows)} rounds: CPU µs per request {cpu:.3f}, req/s {rate:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
