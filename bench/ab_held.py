"""S8 A/B: memory per held connection for two builds of one server, interleaved.

`python bench/ab_held.py SPEC --a-path DIR [--variant idle|slowup] [--rounds N] [--count N]`
starts SPEC with DIR first on PYTHONPATH (A, an older `python/siesta` copied
to DIR/siesta) and without it (B, the build in .venv), one fresh server per
measurement, ABBA, and holds S8's 5000 connections on each as run.py does;
it prints KiB per held connection per round and the medians.
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ab import start  # noqa: E402
from run import held_memory  # noqa: E402
from servers import SPECS, pin_load  # noqa: E402


def held_kib(spec, logdir, tag, variant, count, path=None):
    """KiB of the server tree's RSS per connection it holds (S8's figure)."""
    server = start(spec, logdir, tag, path)
    try:
        options = ("--initial", 4096, "--drip", 0) if variant == "slowup" else ()
        before, after, held, _, _ = held_memory(server, variant, count, *options)
    finally:
        server.stop()
    if held <= 0:
        raise SystemExit(f"{spec.name} held no connection (see its log in {logdir})")
    return (after - before) / held / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--a-path", required=True)
    parser.add_argument("--variant", choices=["idle", "slowup"], default="idle")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    pin_load()
    spec = next(s for s in SPECS if s.name == args.spec)
    rows = []
    print(f"{args.spec}, {args.variant}, {args.count} connections; KiB per held connection")
    print("| round | order | A | B |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="ab-held-") as logdir:
        for i in range(args.rounds):
            order = "AB" if i % 2 == 0 else "BA"
            got = {}
            for side in order:
                path = args.a_path if side == "A" else None
                got[side] = held_kib(spec, logdir, f"{i}{side}", args.variant, args.count, path)
            rows.append(got)
            print(f"| {i + 1} | {order} | {got['A']:.2f} | {got['B']:.2f} |", flush=True)
    a = statistics.median(r["A"] for r in rows)
    b = statistics.median(r["B"] for r in rows)
    print(f"\nmedian KiB per connection: A {a:.2f}, B {b:.2f}, B ÷ A {b / a:.3f}")


if __name__ == "__main__":
    main()
