"""S4 A/B: two server variants, interleaved, for the cost of a streamed download.

`python bench/ab_download.py A B [--rounds N] [--mib M] [--path /stream]`
starts server spec A and server spec B side by side (pinned as in run.py),
then downloads `--mib` MiB from each in turn, A, B, B, A, ... (ABBA), with
the S4 client (`client.py download`, run in this process on the load CPU).
Per download it records MiB/s and the server's CPU seconds for the whole
body (`procs.cpu_ns`, from the threads' schedstat), and prints a Markdown
table and the medians of the B ÷ A ratios. CPU per MiB is the figure to
read: it does not depend on how fast the client drains the socket or on a
neighbour stealing the CPU for a moment. `--path /file` downloads through
`wsgi.file_wrapper` instead (bench/app.py). To compare two builds of one
spec, give the older package's parent directory as `--a-path DIR` (as in
ab.py): `python bench/ab_download.py siesta-gevent siesta-gevent --a-path DIR`.
"""

import argparse
import asyncio
import os
import statistics
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client  # noqa: E402
import procs  # noqa: E402
from ab import interleave  # noqa: E402
from servers import LOAD_CPUS, SERVER_CPUS, SPECS, pin_load  # noqa: E402


def download(server, mib, path):
    """One download on a running server: (MiB/s, server CPU s per 256 MiB)."""
    args = types.SimpleNamespace(port=server.port, mib=mib, timeout=120.0, path=path)
    cpu0 = procs.cpu_ns(server.pid)
    result = asyncio.run(client.mode_download(args))
    cpu = procs.cpu_ns(server.pid) - cpu0
    if not result["ok"]:
        raise RuntimeError(f"download failed: {result}")
    return result["mib_per_s"], cpu / 1e9 * 256 / mib


def compare(a, b, rounds, mib, path, paths=(None, None), out=print):
    """Runs the A/B; returns the rows `(order, (a MiB/s, a CPU s), (b MiB/s, b CPU s))`."""
    return interleave(
        a,
        b,
        rounds,
        lambda server: download(server, min(mib, 16), path),
        lambda server: download(server, mib, path),
        paths,
        out,
        digits=3,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--path", default="/stream", choices=["/stream", "/file"])
    parser.add_argument("--a-path", help="PYTHONPATH entry for A (another build of siesta)")
    parser.add_argument("--b-path", help="PYTHONPATH entry for B")
    args = parser.parse_args(argv)
    specs = {spec.name: spec for spec in SPECS}
    a, b = specs[args.a], specs[args.b]
    pin_load()
    print(f"pinning: server CPUs {sorted(SERVER_CPUS or [])}, load {sorted(LOAD_CPUS or [])}")
    print(f"{args.mib} MiB from {args.path}; CPU: server CPU s per 256 MiB\n")
    cols = "A MiB/s | A CPU s | B MiB/s | B CPU s"
    print(f"| round | order | {cols} | B ÷ A CPU |")
    print("|---|---|---|---|---|---|---|")
    rows = compare(
        a,
        b,
        args.rounds,
        args.mib,
        args.path,
        (args.a_path, args.b_path),
        out=lambda line: print(line, flush=True),
    )
    cpu = statistics.median(r[2][1] / r[1][1] for r in rows)
    rate = statistics.median(r[2][0] / r[1][0] for r in rows)
    med = {side: statistics.median(r[k][1] for r in rows) for side, k in (("A", 1), ("B", 2))}
    mibs = {side: statistics.median(r[k][0] for r in rows) for side, k in (("A", 1), ("B", 2))}
    print(
        f"\nA ({a.name}): median {mibs['A']:,.0f} MiB/s, {med['A']:.3f} CPU s; "
        f"B ({b.name}): median {mibs['B']:,.0f} MiB/s, {med['B']:.3f} CPU s"
    )
    print(f"median B ÷ A CPU per MiB: {cpu:.3f}, MiB/s: {rate:.3f} over {len(rows)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
