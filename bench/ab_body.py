"""Body A/B: two server variants, interleaved, on the upload scenarios S2, S3 and S8.

`python bench/ab_body.py A B --scenario s3 [--rounds N] [--mib M]` is
`ab.py` for request bodies. For S2 (16 concurrent 1 MiB uploads, `--count`
of them) and S3 (one streamed upload of `--mib` MiB) both servers stay up
the whole time and take one run each per round, in ABBA order; each run
gives wall MiB/s (from `client.py`), server CPU seconds per GiB (from the
threads' schedstat, `procs.cpu_ns`) and the peak RSS of the server tree
during the run. S8 (memory per parked upload, `--count` of them) needs a
fresh server per measurement, started in the same ABBA order. The medians
of the B ÷ A ratios close the table; read the CPU one first, since CPU per
GiB does not depend on how fast the client is. Two builds of one spec:
copy the older `python/siesta` package (with its `_siesta*.so`) to
DIR/siesta and give `--a-path DIR`, as with `ab.py`. Extra server options
go in `--extra` (e.g. `--extra "--max-threads 8"`), environment variables for
one side in `--a-env`/`--b-env` (e.g. `--a-env MALLOC_ARENA_MAX=16`).
"""

import argparse
import os
import shlex
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from ab import start as start_plain  # noqa: E402
from run import MIB, held_memory, run_client  # noqa: E402
from servers import LOAD_CPUS, SERVER_CPUS, SPECS, Running, pin_load  # noqa: E402

GIB = 1024 * MIB


def start(spec, logdir, tag, path, extra, env=()):
    """A server for `spec` with `extra` options, `path` first on its PYTHONPATH,
    and the `env` pairs (NAME=VALUE) in its environment."""
    pairs = [pair.split("=", 1) for pair in env]
    saved = {name: os.environ.get(name) for name, _ in pairs}
    os.environ.update(dict(pairs))
    try:
        if not extra:
            return start_plain(spec, logdir, tag, path)
        saved_path = os.environ.get("PYTHONPATH")
        if path:
            os.environ["PYTHONPATH"] = path
        try:
            return Running(spec, 1, os.path.join(logdir, f"{tag}-{spec.name}.log"), extra)
        finally:
            if path:
                os.environ.pop("PYTHONPATH")
                if saved_path is not None:
                    os.environ["PYTHONPATH"] = saved_path
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def upload_run(server, args):
    """One S2 or S3 run: (MiB/s, server CPU s per GiB, peak RSS MiB)."""
    if args.scenario == "s3":
        options, size = ("bigupload", "--mib", args.mib, "--timeout", 600), args.mib * MIB
    else:
        options = ("upload", "--count", args.count, "--concurrency", 16, "--size", MIB)
        size = args.count * MIB
    with procs.RssSampler(server.pid) as rss:
        cpu0 = procs.cpu_ns(server.pid)
        result = run_client(options[0], server.port, *options[1:], timeout=900)
        cpu = procs.cpu_ns(server.pid) - cpu0
    if "mib_per_s" not in result or result.get("ok") in (False, 0) or result.get("bad"):
        raise RuntimeError(f"upload failed: {result}")
    return result["mib_per_s"], cpu / 1e9 / (size / GIB), rss.peak / MIB


def parked_run(spec, args, logdir, tag, path, env):
    """One S8 parked-upload measurement on a fresh server: (KiB per upload, held, RSS MiB)."""
    server = start(spec, logdir, tag, path, args.extra, env)
    try:
        options = ("--initial", 4096, "--drip", 0)
        before, after, held, _, _ = held_memory(server, "slowup", args.count, *options)
    finally:
        server.stop()
    return (after - before) / 1024 / max(held, 1), held, after / MIB


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--scenario", choices=("s2", "s3", "s8"), default="s3")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--mib", type=int, default=1024, help="S3 body size")
    parser.add_argument("--count", type=int, help="S2 uploads (512) or S8 parked uploads (1000)")
    parser.add_argument("--a-path", help="PYTHONPATH entry for A (another build of siesta)")
    parser.add_argument("--b-path", help="PYTHONPATH entry for B")
    parser.add_argument("--a-env", action="append", default=[], help="NAME=VALUE for A's server")
    parser.add_argument("--b-env", action="append", default=[], help="NAME=VALUE for B's server")
    parser.add_argument("--extra", default="", help="server options for both sides, one string")
    args = parser.parse_args(argv)
    args.extra = shlex.split(args.extra)
    if args.count is None:
        args.count = 1000 if args.scenario == "s8" else 512
    specs = {spec.name: spec for spec in SPECS}
    sides = {
        "A": (specs[args.a], args.a_path, args.a_env),
        "B": (specs[args.b], args.b_path, args.b_env),
    }
    pin_load()
    print(f"pinning: server CPUs {sorted(SERVER_CPUS or [])}, load {sorted(LOAD_CPUS or [])}")
    if args.scenario == "s8":
        print("| round | order | A KiB/upload | A held | B KiB/upload | B held | B ÷ A |")
        print("|---|---|---|---|---|---|---|")
    else:
        print(
            "| round | order | A MiB/s | A CPU s/GiB | A peak MiB "
            "| B MiB/s | B CPU s/GiB | B peak MiB | B ÷ A CPU |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        servers = {}
        try:
            if args.scenario != "s8":
                for side, (spec, path, env) in sides.items():
                    servers[side] = start(spec, logdir, side, path, args.extra, env)
                    servers[side].remember_tree()
            for i in range(args.rounds):
                order = ["A", "B"] if i % 2 == 0 else ["B", "A"]
                got = {}
                for side in order:
                    spec, path, env = sides[side]
                    if args.scenario == "s8":
                        got[side] = parked_run(spec, args, logdir, f"{i}{side}", path, env)
                    else:
                        got[side] = upload_run(servers[side], args)
                a, b = got["A"], got["B"]
                rows.append((a, b))
                if args.scenario == "s8":
                    print(
                        f"| {i + 1} | {''.join(order)} | {a[0]:.1f} | {a[1]} | {b[0]:.1f} "
                        f"| {b[1]} | {b[0] / a[0]:.3f} |",
                        flush=True,
                    )
                else:
                    print(
                        f"| {i + 1} | {''.join(order)} | {a[0]:.0f} | {a[1]:.3f} | {a[2]:.1f} "
                        f"| {b[0]:.0f} | {b[1]:.3f} | {b[2]:.1f} | {b[1] / a[1]:.3f} |",
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()
    if args.scenario == "s8":
        med = statistics.median(b[0] / a[0] for a, b in rows)
        print(
            f"\nmedian KiB/upload A {statistics.median(a[0] for a, _ in rows):.1f}, "
            f"B {statistics.median(b[0] for _, b in rows):.1f}; median B ÷ A {med:.3f}"
        )
    else:
        for k, name in ((0, "MiB/s"), (1, "CPU s/GiB"), (2, "peak RSS MiB")):
            ma = statistics.median(a[k] for a, _ in rows)
            mb = statistics.median(b[k] for _, b in rows)
            ratio = statistics.median(b[k] / a[k] for a, b in rows)
            print(f"median {name}: A {ma:.3f}, B {mb:.3f}, B ÷ A {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
