"""Turn one run's JSON lines into `results/<run>.md`, `results/latest.md` and PNG charts.

Reads `results/<run>-meta.json` and `results/<run>-S*.jsonl` (the newest run
unless `--run` names one), prints one markdown table per scenario, and gives
every Siesta figure as a ratio to the best peer of the same run and group
(Siesta ÷ best; the better direction is shown in each column header). Charts
(`<run>-` prefixed, and unprefixed for the newest run):
`s1.png` (hello req/s and CPU per request), `memory.png` (S3/S4 peak RSS),
`s6.png` (hello under slow uploaders as a share of idle). Measuring is
`run.py`'s job; this module only formats.
"""

import argparse
import glob
import json
import os
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# The bare hyper servers (bench/hyper-hello): ceilings, never peers.
CEILINGS = ("hyper-hello", "hyper-64k")

# Per scenario: (grouping key, [(field, header, better, format)]); better is
# "high", "low" or None (not compared).
COLUMNS = {
    "S1": (
        "workers",
        [
            ("processes", "processes", None, "{}"),
            ("req_per_s", "req/s", "high", "{:,.0f}"),
            ("p99_ms", "p99 ms", "low", "{:.2f}"),
            ("connections_left_waiting", "connections left waiting", None, "{}"),
            ("steal_ms_server", "steal ms", None, "{}"),
            ("cpu_us_per_req", "CPU µs/req", "low", "{:.1f}"),
            ("errors", "errors", None, "{}"),
            ("non_2xx", "non-2xx", None, "{}"),
        ],
    ),
    "S2": (
        None,
        [
            ("mib_per_s", "MiB/s", "high", "{:.0f}"),
            ("server_cpu_s", "server CPU s", "low", "{:.2f}"),
            ("peak_rss_mib", "peak RSS MiB", "low", "{:.1f}"),
            ("ok", "ok", None, "{}"),
            ("bad", "bad sha", None, "{}"),
            ("errors", "errors", None, "{}"),
        ],
    ),
    "S3": (
        None,
        [
            ("mib", "MiB", None, "{}"),
            ("elapsed_s", "s", "low", "{:.2f}"),
            ("mib_per_s", "MiB/s", "high", "{:.0f}"),
            ("cpu_s_per_gib", "server CPU s/GiB", "low", "{:.3f}"),
            ("peak_rss_mib", "peak RSS MiB", "low", "{:.1f}"),
            ("rss_growth_mib", "RSS growth MiB", "low", "{:.1f}"),
            ("ok", "sha ok", None, "{}"),
        ],
    ),
    "S4": (
        None,
        [
            ("mib", "MiB", None, "{}"),
            ("elapsed_s", "s", "low", "{:.2f}"),
            ("mib_per_s", "MiB/s", "high", "{:.0f}"),
            ("cpu_s_per_gib", "server CPU s/GiB", "low", "{:.3f}"),
            ("peak_rss_mib", "peak RSS MiB", "low", "{:.1f}"),
            ("rss_growth_mib", "RSS growth MiB", "low", "{:.1f}"),
            ("ok", "length ok", None, "{}"),
        ],
    ),
    "S5": (
        "variant",
        [
            ("status", "status", None, "{}"),
            ("sent_kib", "body KiB sent", "low", "{:,.0f}"),
            ("acked_kib", "KiB acked", None, "{:,.0f}"),
            ("time_to_response_ms", "ms to response", None, "{:.1f}"),
            ("got_100", "100 sent", None, "{}"),
            ("connection_close_header", "Connection: close", None, "{}"),
            ("connection", "then", None, "{}"),
        ],
    ),
    "S6": (
        "count",
        [
            ("req_per_s", "hello req/s (half the core)", "high", "{:,.0f}"),
            ("ratio_to_idle", "× idle", "high", "{:.2f}"),
            ("spread", "× idle, lowest–highest round", None, "{}"),
            ("cpu_us_per_req", "CPU µs/req", "low", "{:.1f}"),
            ("cpu_ratio_to_idle", "CPU/req × idle", "low", "{:.2f}"),
            ("p99_ms", "p99 ms", "low", "{:.1f}"),
            ("errors", "wrk errors", None, "{}"),
            ("held", "uploaders connected", None, "{}"),
            ("dropped", "ended by server (closed, reset or answered)", None, "{}"),
            ("server_alive", "alive", None, "{}"),
            ("hello_after", "hello after", None, "{}"),
        ],
    ),
    "S8": (
        "variant",
        [
            ("held", "held by server", None, "{}"),
            ("kib_per_conn", "KiB/conn", "low", "{:.1f}"),
            ("rss_before_mib", "RSS before MiB", None, "{:.1f}"),
            ("rss_after_mib", "RSS after MiB", None, "{:.1f}"),
            ("client_failed", "client connects failed", None, "{}"),
        ],
    ),
    "S9": (
        "reloads",
        [
            ("requests", "requests", None, "{:,}"),
            ("req_per_s", "req/s", "high", "{:,.0f}"),
            ("failed", "failed", "low", "{}"),
            ("server_alive", "alive", None, "{}"),
            ("hello_after", "hello after", None, "{}"),
        ],
    ),
    "S10": (
        "against",
        [
            ("pairs", "server pairs", None, "{}"),
            ("rounds", "bursts", None, "{}"),
            ("off_cpu_us", "off CPU µs/req (median)", None, "{:.2f}"),
            ("on_cpu_us", "on CPU µs/req (median)", None, "{:.2f}"),
            ("cpu_ratio", "on ÷ off CPU/req (median)", None, "{:.3f}"),
            ("cpu_ratio_iqr", "middle half of bursts", None, "{}"),
            ("req_ratio", "on ÷ off req/s sharing the core (median)", None, "{:.3f}"),
        ],
    ),
}
COLUMNS["S7"] = (
    "count",
    [
        {
            "held": ("held", "slowloris connected", None, "{}"),
            "req_per_s": ("req_per_s", "hello req/s", "high", "{:,.0f}"),
        }.get(col[0], col)
        for col in COLUMNS["S6"][1]
    ],
)

# S6 as runs before 2026-11-30 measured it: one server, each loaded burst
# between two idle ones (records without "method": "twins").
COLUMNS["S6-in-turn"] = (
    "count",
    [COLUMNS["S7"][1][0] if col[0] == "req_per_s" else col for col in COLUMNS["S6"][1]],
)

TITLES = {
    "S1": "S1 — hello world, wrk -t1 -c64 (median burst, servers taking turns)",
    "S2": "S2 — 16 concurrent 1 MiB uploads (512 per run; median run, servers taking turns)",
    "S3": "S3 — one streamed upload (median run, servers taking turns)",
    "S4": "S4 — streamed download (curl; median run, servers taking turns)",
    "S5": "S5 — early 413 for a declared 100 MiB body",
    "S6": "S6 — hello req/s while slow uploaders trickle bodies "
    "(two servers of each kind sharing the core, loaded at once, the uploaders on one; "
    "median of rounds)",
    "S6-in-turn": "S6 — hello req/s while slow uploaders trickle bodies "
    "(median of rounds, each loaded burst between two idle ones)",
    "S7": "S7 — hello req/s beside 500 slowloris connections",
    "S8": "S8 — memory per held connection (5000 attempted)",
    "S9": "S9 — HUP reloads under load (2 workers, wrk -c16): failed requests",
    "S10": "S10 — the cost of --metrics-bind: S1 with metrics on ÷ off, both loaded at once",
}


def is_siesta(name):
    return name.startswith("siesta")


def is_ceiling(name):
    return name in CEILINGS


def derive(scenario, record):
    """Fields computed for display from the raw record."""
    if scenario == "S5":
        if record.get("body_bytes_sent") is not None:
            record["sent_kib"] = record["body_bytes_sent"] / 1024
        if record.get("body_bytes_acked") is not None:
            record["acked_kib"] = record["body_bytes_acked"] / 1024
    if scenario in ("S6", "S7") and "load" in record:
        record["held"] = record["setup"].get("connected")
        load = record["load"]
        # Ended by the server: closed, reset, or answered (a 408 from a header timeout).
        record["dropped"] = (
            load.get("closed_by_server", 0)
            + load.get("reset", 0)
            + sum(load.get("statuses", {}).values())
        )
    if scenario in ("S6", "S7") and record.get("ratio_spread"):
        low, high = record["ratio_spread"]
        rounds = record.get("rounds", 1)
        record["spread"] = f"{low:.2f}–{high:.2f} ({rounds} rounds)" if rounds > 1 else "one round"
    if scenario in ("S6", "S7") and record.get("wrk_hung"):
        record["errors"] = f"{record.get('errors', 0)} (wrk overran -d, stopped)"
    if scenario == "S6" and (record.get("idle_errors") or record.get("idle_wrk_hung")):
        hung = ", its wrk overran -d" if record.get("idle_wrk_hung") else ""
        record["errors"] = (
            f"{record.get('errors', 0)} (idle twin: {record.get('idle_errors', 0)}{hung})"
        )
    if scenario == "S8" and "setup" in record:
        record["client_failed"] = record["setup"].get("connect_errors")
    return record


def load_run(run_id=None):
    metas = sorted(glob.glob(os.path.join(RESULTS, "*-meta.json")))
    if not metas:
        raise SystemExit("no runs in results/")
    path = os.path.join(RESULTS, f"{run_id}-meta.json") if run_id else metas[-1]
    with open(path) as handle:
        meta = json.load(handle)
    records = {}
    for jsonl in sorted(glob.glob(os.path.join(RESULTS, f"{meta['run']}-S*.jsonl"))):
        with open(jsonl) as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    records.setdefault(record["scenario"], []).append(
                        derive(record["scenario"], record)
                    )
    return meta, records


def fmt(value, pattern):
    if value is None:
        return "—"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def partial_latency(row):
    """An S1 row whose server left some of wrk's connections waiting through
    a burst: its p99 is over the others' requests only."""
    waiting = row.get("connections_left_waiting")
    return isinstance(waiting, int) and waiting > 0


def not_compared(row, field):
    """A figure no ratio may use: a p99 over part of the connections."""
    return field == "p99_ms" and partial_latency(row)


def usable(row, field):
    """Whether a peer's or a ceiling's figure may stand in a ratio: the run
    did not fail, its answers were right (S2: every upload answered with the
    right hash; S3, S4: the hash or length checked), and it is no p99 over
    part of the connections."""
    ok = row.get("ok")
    if "error" in row or ok is False or not isinstance(row.get(field), (int, float)):
        return False
    if isinstance(ok, int) and not isinstance(ok, bool) and "uploads" in row:
        if ok != row["uploads"] or row.get("bad") or row.get("errors"):
            return False
    return not not_compared(row, field)


def best_peer(rows, field, better):
    """(value, server) of the best peer (not Siesta, not the ceiling) for a
    field, among the usable ones."""
    peers = [
        (row[field], row["server"])
        for row in rows
        if not is_siesta(row["server"]) and not is_ceiling(row["server"]) and usable(row, field)
    ]
    if not peers:
        return None
    return max(peers) if better == "high" else min(peers)


def ratio_text(value, best, field_header):
    if not isinstance(value, (int, float)) or best is None:
        return None
    best_value, server = best
    if best_value == 0:
        return f"{field_header} = best" if value == 0 else f"{field_header} best is 0 ({server})"
    return f"{field_header} ×{value / best_value:.2f} ({server})"


def ceiling_text(value, rows, field, header):
    """Siesta's figure over each ceiling's in the same group: how close it is
    to bare hyper (`MiB/s ×0.78 (hyper-hello), ×0.80 (hyper-64k)`)."""
    parts = []
    for row in rows:
        theirs = row.get(field)
        if (
            is_ceiling(row["server"])
            and usable(row, field)
            and theirs
            and isinstance(value, (int, float))
        ):
            parts.append(f"×{value / theirs:.2f} ({row['server']})")
    return f"{header} " + ", ".join(parts) if parts else None


def scenario_table(scenario, rows):
    group_key, columns = COLUMNS[scenario]
    lines = []
    header = (
        ["server"]
        + ([group_key] if group_key else [])
        + [
            f"{h} {'↑' if b == 'high' else '↓' if b == 'low' else ''}".strip()
            for _, h, b, _ in columns
        ]
    )
    header.append("Siesta ÷ best peer")
    with_ceiling = any(is_ceiling(row["server"]) for row in rows)
    if with_ceiling:
        header.append("Siesta ÷ ceiling")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = [f"**{row['server']}**" if is_siesta(row["server"]) else row["server"]]
        if group_key:
            cells.append(fmt(row.get(group_key), "{}"))
        if "error" in row:
            cells.append(row["error"].replace("|", "/"))
            cells.extend([""] * (len(header) - len(cells)))
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells.extend(fmt(row.get(field), pattern) for field, _, _, pattern in columns)
        ratios, ceilings = [], []
        if is_siesta(row["server"]):
            group = (
                [r for r in rows if r.get(group_key) == row.get(group_key)] if group_key else rows
            )
            for field, head, better, _ in columns:
                if better and not not_compared(row, field):
                    text = ratio_text(row.get(field), best_peer(group, field, better), head)
                    if text:
                        ratios.append(text)
                    text = ceiling_text(row.get(field), group, field, head)
                    if text:
                        ceilings.append(text)
        cells.append("; ".join(ratios))
        if with_ceiling:
            cells.append("; ".join(ceilings))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine_header(meta):
    m = meta["machine"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(meta["started"]))
    took = meta.get("finished", meta["started"]) - meta["started"]
    lines = [
        f"# Siesta benchmark — {meta['kind']} run {meta['run']}",
        "",
        f"- date: {when}, took {took / 60:.1f} min",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())),
    ]
    pin = meta.get("pinning")
    if pin:
        lines.append(
            f"- pinning: server on CPUs {pin['server_cpus']}, load (wrk, client.py) on "
            f"{pin['load_cpus']}; CPU figures are the server's own, per request on its core"
        )
    missing = meta.get("not_installed") or {}
    if missing:
        lines.append("- not installed here: " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
    notes = [f"{name} ({note})" for name, note in meta.get("servers", {}).items() if note]
    if notes:
        lines.append("- servers: " + "; ".join(notes))
    lines += [
        "- every server binds 127.0.0.1, 1 worker and 8 app threads unless noted; "
        "gevent servers use their default connection limit",
        "- ratios: Siesta ÷ best peer in the same run and group (↑ higher is better, "
        "↓ lower is better); hyper-hello and hyper-64k are the ceilings (bare hyper, no "
        "Python), never peers; Siesta ÷ ceiling says how close each figure is to them",
        "",
    ]
    return lines


def write_markdown(meta, records, path):
    lines = machine_header(meta)
    for scenario in sorted(records):
        shape = scenario
        if scenario == "S6" and any(
            "error" not in r and r.get("method") != "twins" for r in records[scenario]
        ):
            shape = "S6-in-turn"
        lines += [f"## {TITLES.get(shape, shape)}", ""]
        lines += scenario_table(shape, records[scenario])
        lines.append("")
        noisy = {}
        for row in records[scenario]:
            if row.get("server_tracebacks"):
                noisy.setdefault(row["server"], (row["server_tracebacks"], row.get("logs", [])))
        if noisy:
            lines.append(
                "Tracebacks in server logs (app errors such as a client gone mid-body "
                "count too): "
                + "; ".join(
                    f"{name} {count} ({', '.join(logs)})" for name, (count, logs) in noisy.items()
                )
            )
            lines.append("")
        failed_runs = [
            f"{row['server']}: {'; '.join(e.replace('|', '/') for e in row['run_errors'])}"
            for row in records[scenario]
            if row.get("run_errors")
        ]
        if failed_runs:
            lines += [
                "Runs whose client failed (the row is the median run): " + "; ".join(failed_runs),
                "",
            ]
        partial = sorted(
            {
                f"{row['server']} ({row['connections_left_waiting']} of "
                f"{row.get('connections', 64)}, {row.get('workers', 1)} worker(s))"
                for row in records[scenario]
                if partial_latency(row)
            }
        )
        if partial:
            lines += [
                "Left some of wrk's connections waiting, unanswered, through a burst (the "
                "most in any burst; wrk's latencies cover answered requests only, so that "
                "p99 is no peer's in the ratios): " + ", ".join(partial),
                "",
            ]
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return "\n".join(lines)


def _bars(ax, rows, field, title, log=False):
    rows = [r for r in rows if isinstance(r.get(field), (int, float))]
    names = [r["server"] for r in rows]
    values = [r[field] for r in rows]
    colors = [
        "tab:red" if is_siesta(n) else "tab:gray" if is_ceiling(n) else "tab:blue" for n in names
    ]
    ax.barh(names, values, color=colors)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if log and values and min(values) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x >= 10000 else f"{x:g}")
    )
    if values:
        ax.set_xlim(right=max(values) * (3 if log else 1.18))
    for index, value in enumerate(values):
        ax.text(
            value,
            index,
            f" {value:,.1f}" if value < 100 else f" {value:,.0f}",
            va="center",
            fontsize=7,
        )


def write_charts(meta, records, prefix=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    s1 = [r for r in records.get("S1", []) if r.get("workers") == 1 and "error" not in r]
    if s1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        _bars(axes[0], s1, "req_per_s", "S1 hello req/s, 1 worker (higher is better)")
        _bars(
            axes[1], s1, "cpu_us_per_req", "server CPU µs per request (lower is better)", log=True
        )
        fig.suptitle(f"{meta['run']} — {meta['machine']['nproc']} CPUs, {meta['machine']['cpu']}")
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"{prefix}s1.png"), dpi=110)
        plt.close(fig)
        written.append(f"{prefix}s1.png")
    s3 = [r for r in records.get("S3", []) if "error" not in r]
    s4 = [r for r in records.get("S4", []) if "error" not in r]
    panels = [
        (rows, f"{name} peak RSS MiB of the server tree, {rows[0].get('mib')} MiB {what}")
        for rows, name, what in ((s3, "S3", "upload"), (s4, "S4", "download"))
        if rows
    ]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
        for ax, (rows, title) in zip(axes[0], panels, strict=True):
            _bars(ax, rows, "peak_rss_mib", title, log=True)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"{prefix}memory.png"), dpi=110)
        plt.close(fig)
        written.append(f"{prefix}memory.png")
    s6 = [r for r in records.get("S6", []) if "error" not in r]
    if s6:
        counts = sorted({r["count"] for r in s6})
        fig, axes = plt.subplots(1, len(counts), figsize=(5.5 * len(counts), 4.5), squeeze=False)
        for ax, count in zip(axes[0], counts, strict=True):
            _bars(
                ax,
                [r for r in s6 if r["count"] == count],
                "ratio_to_idle",
                f"S6 hello req/s with {count} slow uploaders, × idle",
            )
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"{prefix}s6.png"), dpi=110)
        plt.close(fig)
        written.append(f"{prefix}s6.png")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write results/latest.md and charts for a run")
    parser.add_argument("--run", help="run id (default: the newest)")
    args = parser.parse_args(argv)
    meta, records = load_run(args.run)
    text = write_markdown(meta, records, os.path.join(RESULTS, f"{meta['run']}.md"))
    charts = write_charts(meta, records, prefix=f"{meta['run']}-")
    newest = sorted(glob.glob(os.path.join(RESULTS, "*-meta.json")))[-1]
    if newest.endswith(f"{meta['run']}-meta.json"):
        write_markdown(meta, records, os.path.join(RESULTS, "latest.md"))
        charts += write_charts(meta, records)
    print(text)
    print(f"\nwrote results/{meta['run']}.md (and latest.md if newest), {', '.join(charts)}")


if __name__ == "__main__":
    main()
