"""Run the benchmark scenarios S1-S8 against Siesta and its peers; write JSON lines.

Each scenario starts a fresh server per measurement (servers.py), drives it with
wrk (S1, and the hello load beside S6/S7) or client.py (everything else), reads
the server tree's CPU time and memory from /proc (procs.py), and appends one
JSON object per server and variant to `results/<run>-<scenario>.jsonl`. A server
that fails to start or dies mid-scenario gets a record with `"error": "failed:
..."` and the run goes on. Every load is bounded in count and time. `report.py`
turns the records into `results/latest.md` and the charts.
"""

import argparse
import json
import os
import platform
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import time

import procs
from servers import (
    BENCH,
    LOAD_CPUS,
    SERVER_CPUS,
    SPECS,
    Running,
    ServerFailed,
    hello_check,
    pin_load,
)

PY = sys.executable
CLIENT = os.path.join(BENCH, "client.py")
RESULTS = os.path.join(BENCH, "results")
MIB = 1024 * 1024
# S7: seconds of idle hello load on the same server before the holders
# connect and after they leave (one 1 s warm-up first); the mean of the two
# around a loaded burst is its "× idle" baseline. (S6 loads twin servers at
# once instead, `Bench._twins`.)
IDLE_BASELINE_S = 3

# Measured round-robin (`Bench.round_robin`): one run per server per round, each on a fresh server.
ROUND_ROBIN = ("S1", "S2", "S3", "S4")

PLANS = {
    "quick": {
        "S1": {"duration": 3, "warmup": 1, "workers": [1]},
        "S3": {"mib": 256},
        "S5": {"mib": 100},
        "S6": {"counts": [100], "duration": 4, "rounds": 2},
        "S9": {"reloads": 3, "every": 1.0},
        "S10": {"pairs": 2, "rounds": 4, "duration": 2},
    },
    "full": {
        "S1": {"duration": 5, "warmup": 1, "workers": [1, 2], "repeat": 5},
        "S2": {"count": 512, "concurrency": 16, "repeat": 3},
        "S3": {"mib": 1024, "repeat": 3},
        "S4": {"mib": 1024, "repeat": 5},
        "S5": {"mib": 100},
        "S6": {"counts": [100, 1000], "duration": 4, "rounds": 6},
        "S7": {"count": 500, "duration": 8},
        "S8": {"count": 5000},
        "S9": {"reloads": 10, "every": 1.0},
        "S10": {"pairs": 6, "rounds": 4, "duration": 2},
    },
}


# -- load tools -------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


# wrk's connections in S1 (and its default elsewhere).
S1_CONNECTIONS = 64


def run_wrk(port, duration, connections=S1_CONNECTIONS, threads=1):
    """wrk on GET / for `duration` s: req/s, p99 (ms), request and error counts."""
    return wrk_result(start_wrk(port, duration, connections, threads), duration)


def start_wrk(port, duration, connections=S1_CONNECTIONS, threads=1):
    """wrk on GET / in the background (see `wrk_result`)."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "2s",
        f"http://127.0.0.1:{port}/",
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _bytes_sent(port):
    """Bytes each established connection to `port` has sent so far, by
    socket (the client's address and the socket's inode: a client port
    reused between two looks is another socket), from `ss -tie` (the
    kernel's per-socket counters); None when ss cannot tell."""
    try:
        done = subprocess.run(
            ["ss", "-tieH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    sent, sock = {}, None
    for line in done.stdout.splitlines():
        if line and not line[0].isspace():  # Recv-Q Send-Q local peer ino:N ...
            fields = line.split()
            inode = next((f for f in fields if f.startswith("ino:")), "")
            sock = (fields[3] if len(fields) > 3 else line, inode)
            sent[sock] = 0
        elif sock and (m := re.search(r"bytes_sent:(\d+)", line)):
            sent[sock] = int(m.group(1))
    return sent


def connections_left_waiting(port, duration):
    """How many of a wrk burst's connections the server left waiting: open
    both at a look 1 s in and at one 1 s before the end, with no byte sent
    on them in between. wrk's latencies cover only the requests that got an
    answer, so a server that leaves connections waiting (uWSGI's threads
    each keep one keep-alive connection) has a p99 over the ones it served.
    A server that closes every connection after one response (pyruvate)
    leaves none waiting: its connections are new at each look."""
    time.sleep(1)
    first = _bytes_sent(port)
    time.sleep(max(duration - 2, 0.5))
    last = _bytes_sent(port)
    if first is None or last is None:
        return None
    return sum(1 for sock, sent in last.items() if first.get(sock) == sent)


def wrk_result(proc, duration):
    """What a `start_wrk` run measured, once it ends (bounded)."""
    result = {"requests": 0, "req_per_s": 0.0, "p99_ms": None, "errors": 0, "non_2xx": 0}
    try:
        out, _ = proc.communicate(timeout=duration + 5)
    except subprocess.TimeoutExpired:
        # Seen with connects stuck in a full accept queue: wrk overstays its -d.
        # SIGINT makes wrk stop and print what it has; SIGKILL if even that hangs.
        result["wrk_hung"] = True
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["req_per_s"] = round(float(m.group(1)), 1)
    if result["requests"] and (m := re.search(r"99%\s+([\d.]+)(us|ms|s)", out)):
        result["p99_ms"] = round(float(m.group(1)) * _UNITS[m.group(2)], 3)
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["errors"] = sum(int(g) for g in m.groups())
        result["timeouts"] = int(m.group(4))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result["non_2xx"] = int(m.group(1))
    return result


def run_client(mode, port, *options, timeout=300):
    """A one-shot client.py mode; returns its JSON result."""
    argv = [PY, CLIENT, mode, "--port", str(port), *map(str, options)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"error": f"client printed nothing: {done.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def _rounded(ratio):
    """A ratio to three places, or None."""
    return None if ratio is None else round(ratio, 3)


def _over_idle(loaded, idles, field):
    """`field` of a loaded burst ÷ its mean over the idle bursts around it."""
    base = [b[field] for b in idles if b.get(field)]
    value = loaded.get(field)
    if not base or value is None:
        return None
    return value / (sum(base) / len(base))


def _median_round(count, done, alive, recovered, stopped, **extra):
    """The record of S6/S7 rounds (`done`: one dict per round, with its
    loaded `burst`, `ratio`, `cpu_ratio`, `setup` and `load`): × idle and
    CPU/req × idle are the medians of the rounds' ratios (the mean of the
    two middle ones for an even count), the other figures those of the
    middle round by × idle (the lower of the two middle ones), with the
    spread of the rounds; a round with no ratio (a baseline that served
    nothing) counts in none of them. `extra` fields go in as given.
    Returns the record and the middle round (None with no ratio)."""
    measured = [r for r in done if r["ratio"] is not None]
    ratios = sorted(r["ratio"] for r in measured)
    ranked = sorted(measured, key=lambda r: r["ratio"])
    median = ranked[(len(ranked) - 1) // 2] if ranked else None
    cpu_ratios = [r["cpu_ratio"] for r in measured if r["cpu_ratio"] is not None]
    record = {
        "count": count,
        **(median["burst"] if median else {}),
        "rounds": len(done),
        **extra,
        "loaded_bursts": [r["burst"] for r in done],
        "ratio_to_idle": _rounded(statistics.median(ratios) if ratios else None),
        "ratio_spread": [ratios[0], ratios[-1]] if ratios else None,
        "cpu_ratio_to_idle": _rounded(statistics.median(cpu_ratios) if cpu_ratios else None),
        "setup": median["setup"] if median else {},
        "load": median["load"] if median else {},
        "server_alive": alive,
        "hello_after": recovered,
    }
    if stopped:
        record["rounds_stopped"] = stopped
    return record, median


class HoldClient:
    """A client.py hold mode in the background: wait for READY, later stop it."""

    def __init__(self, mode, port, *options):
        argv = [PY, CLIENT, mode, "--port", str(port), *map(str, options)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _line(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def ready(self, timeout=90):
        line = self._line(timeout)
        if not line.startswith("READY "):
            self.kill()
            raise RuntimeError(f"hold client not ready: {line.strip()[:200]!r}")
        return json.loads(line[6:])

    def finish(self, timeout=30):
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        line = self._line(timeout)
        self.kill()
        return json.loads(line) if line.strip() else {"error": "hold client gave no result"}

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def hold(mode, port, count, hold_s, connect_concurrency, *options):
    """A client.py hold mode of `count` connections to `port`, held up to `hold_s`."""
    return HoldClient(
        mode,
        port,
        "--count",
        count,
        "--hold",
        hold_s,
        "--connect-concurrency",
        connect_concurrency,
        *options,
    )


def held_memory(server, mode, count, *options):
    """S8 on a running server: RSS of its tree before and after `count`
    held connections, the connections it holds (sockets in its tree, not
    those the client could open: a full accept queue also completes
    connects), and the hold client's setup and end."""
    time.sleep(0.5)
    before = procs.rss_bytes(server.pid)
    sockets_before = procs.socket_count(server.pid)
    holder = hold(mode, server.port, count, 120, 1000, "--settle", 2, *options)
    try:
        setup = holder.ready(timeout=120)
        server.remember_tree()
        after = procs.rss_bytes(server.pid)
        held = procs.socket_count(server.pid) - sockets_before
    finally:
        final = holder.finish()
    return before, after, held, setup, final


# -- scenarios --------------------------------------------------------------------


class Bench:
    """One run: the plan, where logs go, and results shared between scenarios."""

    def __init__(self, plan, run_id):
        self.plan, self.run_id = plan, run_id
        self.logs = os.path.join(RESULTS, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.starts = 0  # numbers the server logs of this run
        self.started_logs = []  # logs of the servers started for the current record(s)

    def start(self, spec, scenario, workers=1):
        self.starts += 1
        path = os.path.join(
            self.logs, f"{self.run_id}-{self.starts:03d}-{scenario}-{spec.name}-w{workers}.log"
        )
        self.started_logs.append(path)
        return Running(spec, workers, path, spec.scenario_args.get(scenario, ()))

    def _transfer(self, scenario, server, p):
        """One run of S1 (a wrk burst after a warm-up), or of the S2, S3 or S4
        client, against a running server."""
        if scenario == "S1":
            duration = p["duration"]
            steal = procs.steal_ms(SERVER_CPUS), procs.steal_ms(LOAD_CPUS)
            wrk = start_wrk(server.port, duration)
            waiting = connections_left_waiting(server.port, duration)
            result = wrk_result(wrk, duration)
            return {
                "processes": len(procs.tree_pids(server.pid)),
                **result,
                "connections": S1_CONNECTIONS,
                "connections_left_waiting": waiting,
                "steal_ms_server": procs.steal_ms(SERVER_CPUS) - steal[0],
                "steal_ms_load": procs.steal_ms(LOAD_CPUS) - steal[1],
            }
        if scenario == "S2":
            return run_client(
                "upload",
                server.port,
                "--count",
                p["count"],
                "--concurrency",
                p["concurrency"],
                "--size",
                MIB,
            )
        mode = "bigupload" if scenario == "S3" else "download"
        return run_client(mode, server.port, "--mib", p["mib"], "--timeout", 600)

    def round_robin(self, scenario, specs, p):
        """S1 to S4: `repeat` rounds, each giving every server (and worker
        count, in S1) one run in turn, so the VM's drift over minutes
        reaches every server alike. Each round starts a `repeat`th of the
        order further on, so no server always goes first and a server's
        runs are at least most of a round apart (with fewer servers than
        rounds, every round starts at the same place, a round apart): a
        slow minute reaches one of them, not two (going forward, then
        backward, put the servers at either end of the order twice in a
        row, where one slow minute could make their median). Each run is on
        a fresh server, stopped after it: only the server measured is up
        (one peer was seen spinning a CPU when idle after a download, which
        slowed every server beside it). Yields
        `(spec, records, logs, seconds)` per server, records shaped as the
        other scenarios', seconds the server's own runs took."""
        repeat = p.get("repeat", 1)
        units = [
            (spec, workers)
            for spec in specs
            for workers in p.get("workers", [1])
            if workers <= spec.max_workers
        ]
        failed, rss = {}, {}
        logs = {spec.name: [] for spec in specs}
        took = dict.fromkeys(logs, 0.0)
        runs = {(spec.name, workers): [] for spec, workers in units}
        cpu = dict.fromkeys(runs, 0.0)
        alive = dict.fromkeys(runs, True)
        for turn in range(repeat):
            # With fewer units than rounds, one order throughout keeps
            # them a round apart (shifts would repeat and bring one back).
            shift = turn * len(units) // repeat if len(units) >= repeat else 0
            for spec, workers in units[shift:] + units[:shift]:
                key = (spec.name, workers)
                if key in failed:
                    continue
                self.started_logs = logs[spec.name]
                began = time.monotonic()
                try:
                    server = self.start(spec, scenario, workers)
                    try:
                        if scenario == "S1":
                            run_wrk(server.port, p["warmup"])  # not counted
                        server.remember_tree()
                        with procs.RssSampler(server.pid) as sampler:
                            cpu0 = procs.cpu_seconds(server.pid)
                            runs[key].append(self._transfer(scenario, server, p))
                            cpu[key] += procs.cpu_seconds(server.pid) - cpu0
                        alive[key] = alive[key] and server.alive()
                    finally:
                        server.stop()
                except Exception as error:  # noqa: BLE001 - one server's failure, not the run's
                    failed[key] = error
                    continue
                finally:
                    took[spec.name] += time.monotonic() - began
                seen = rss.setdefault(key, [sampler.baseline, sampler.peak, 0])
                seen[1] = max(seen[1], sampler.peak)
                seen[2] += sampler.samples
        for spec in specs:
            records = []
            for workers in [w for name, w in runs if name == spec.name]:
                key = (spec.name, workers)
                error = failed.get(key)
                if error is not None:
                    kind = type(error).__name__
                    record = {"error": f"failed: {kind}: {str(error)[:400]}"}
                    if scenario == "S1":
                        record["workers"] = workers
                    records.append(record)
                    continue
                record = self._summary(scenario, p, runs[key], cpu[key])
                if scenario == "S1":
                    record.update(workers=workers, server_alive=alive[key])
                else:
                    baseline, peak, samples = rss[key]
                    record.update(
                        baseline_rss_mib=round(baseline / MIB, 1),
                        peak_rss_mib=round(peak / MIB, 1),
                        rss_growth_mib=round((peak - baseline) / MIB, 1),
                        rss_samples=samples,
                        server_alive=alive[key],
                    )
                records.append(record)
            yield spec, records, logs[spec.name], took[spec.name]

    @staticmethod
    def _summary(scenario, p, runs, cpu):
        """The median run's figures (by MiB/s or req/s; every rate kept in
        `rates`) and the server's CPU over all runs."""
        rate = "req_per_s" if scenario == "S1" else "mib_per_s"
        ordered = sorted(runs, key=lambda r: r.get(rate) or 0)
        result = dict(ordered[len(ordered) // 2])
        result["rates"] = [r.get(rate) for r in runs]
        result["runs"] = len(runs)
        # A client run that failed (its rate then sorts first) stays visible.
        failures = [r["error"] for r in runs if "error" in r]
        if failures:
            result["run_errors"] = failures
        if scenario == "S1":
            requests = max(sum(r["requests"] for r in runs), 1)
            for key in ("errors", "non_2xx", "timeouts"):
                result[key] = sum(r.get(key, 0) for r in runs)
            if any(r.get("wrk_hung") for r in runs):
                result["wrk_hung"] = True
            # The hypervisor's steal on the server's CPU during each burst,
            # in the order of `rates`: p99 follows it (README).
            result["steals_ms_server"] = [r.get("steal_ms_server") for r in runs]
            waiting = [r.get("connections_left_waiting") for r in runs]
            waiting = [n for n in waiting if n is not None]
            # The most of any burst: a p99 that leaves the waits of some
            # connections out is no peer's (report.py).
            result["connections_left_waiting"] = max(waiting) if waiting else None
            result.update(
                server_cpu_s=round(cpu, 2),
                cpu_us_per_req=round(cpu / requests * 1e6, 2),
            )
            return result
        if scenario == "S2":
            result["ok"] = min(r.get("ok", 0) for r in runs)
            for key in ("bad", "errors"):
                result[key] = max(r.get(key, 0) for r in runs)
            # Per run of `count` uploads, as one run reported it before.
            result.update(
                uploads=p["count"],
                concurrency=p["concurrency"],
                server_cpu_s=round(cpu / len(runs), 2),
            )
            return result
        result["ok"] = all(r.get("ok") for r in runs)
        # Server CPU per GiB moved, over every run: steadier than the rate on
        # a VM whose speed moves from one second to the next. (Per-process
        # ticks, not schedstat: they keep the CPU of exited threads.)
        result["cpu_s_per_gib"] = round(cpu / (p["mib"] * len(runs) / 1024), 3)
        result["mib"] = p["mib"]
        return result

    def s5(self, spec, p):
        server = self.start(spec, "S5")
        try:
            for expect in (False, True):
                extra = ["--expect"] if expect else []
                result = run_client(
                    "reject", server.port, "--mib", p["mib"], "--timeout", 30, *extra, timeout=60
                )
                yield {
                    "variant": "expect-100" if expect else "plain",
                    **result,
                    "server_alive": server.alive(),
                }
        finally:
            server.stop()

    def _under_load(self, spec, scenario, mode, count, duration, *options, rounds=1):
        """Hello bursts beside `count` held connections, each between two idle
        bursts of the same server, `rounds` times; the record:
        `_median_round`."""
        server = self.start(spec, scenario)
        done = []  # one dict per round: the loaded burst, its ratios, setup and end
        idles = []
        alive = recovered = True
        stopped = None
        try:
            # The baseline is this server's own idle rate just before and
            # just after each loaded burst, not S1's from minutes earlier:
            # the VM's speed drifts by more than the differences S6 and S7
            # look for, and a server's first seconds of load can be slower
            # than its later ones.
            run_wrk(server.port, 1)  # warm-up, not counted
            idles.append(self._burst(server, IDLE_BASELINE_S))
            for index in range(rounds):
                try:
                    round_ = self._round(server, mode, count, duration, options)
                except Exception as error:  # noqa: BLE001 - later rounds keep the first ones
                    if not done:
                        raise
                    stopped = f"round {index + 1}: {error}"
                    break
                alive = server.alive()
                recovered = alive
                if alive:
                    try:
                        hello_check(server.port)
                    except ServerFailed:
                        recovered = False
                around = [idles[-1]]
                if recovered:
                    time.sleep(1)  # the held connections' ends, logged by the app
                    idles.append(self._burst(server, IDLE_BASELINE_S))
                    around.append(idles[-1])
                round_["ratio"] = _over_idle(round_["burst"], around, "req_per_s")
                round_["cpu_ratio"] = _over_idle(round_["burst"], around, "cpu_us_per_req")
                done.append(round_)
                if not recovered or not round_["burst"]["requests"]:
                    break  # a server that stops serving does so every round
        finally:
            server.stop()
        idle_rates = [r["req_per_s"] for r in idles if r["req_per_s"]]
        record, _ = _median_round(count, done, alive, recovered, stopped)
        record["idle_req_per_s"] = round(statistics.median(idle_rates), 1) if idle_rates else None
        record["idle_bursts"] = idles
        return record

    @staticmethod
    def _round(server, mode, count, duration, options):
        """One loaded burst: `count` held connections, wrk beside them, then they go."""
        holder = hold(mode, server.port, count, duration + 60, 200, *options)
        try:
            setup = holder.ready()
            burst = Bench._burst(server, duration)
        finally:
            load = holder.finish()
        return {"setup": setup, "burst": burst, "load": load}

    @staticmethod
    def _burst(server, duration):
        """wrk on GET / for `duration` s, with the server's CPU µs per request
        (utime + stime of its processes: threads that ended count too)."""
        return Bench._bursts_at_once((server,), duration)[0]

    def _twins(self, spec, scenario, mode, count, duration, rounds):
        """Two servers of one spec sharing the server CPU, each loaded by its
        own wrk at the same time, `count` held connections on one of them
        (the first in rounds 1, 3, 5..., the second in 2, 4, 6...). The VM's speed
        moves by 10-30% from one burst to the next, and two servers loaded
        at once see the same moves, so the loaded twin's rate ÷ the idle
        twin's in the same seconds keeps only what the held connections
        cost (`compare_together` in ab.py, S10, does the same for two
        builds). The record: `_median_round`."""
        twins = []
        done = []
        alive = recovered = True
        stopped = None
        try:
            for _ in range(2):
                twins.append(self.start(spec, scenario))
            for server in twins:
                run_wrk(server.port, 1)  # warm-up, not counted
            for index in range(rounds):
                loaded, idle = twins[index % 2], twins[1 - index % 2]
                try:
                    holder = hold(mode, loaded.port, count, duration + 60, 200)
                    try:
                        setup = holder.ready()
                        bursts = self._bursts_at_once((loaded, idle), duration)
                    finally:
                        load = holder.finish()
                except Exception as error:  # noqa: BLE001 - later rounds keep the first ones
                    if not done:
                        raise
                    stopped = f"round {index + 1}: {error}"
                    break
                alive = loaded.alive() and idle.alive()
                recovered = alive
                if alive:
                    try:
                        hello_check(loaded.port)
                    except ServerFailed:
                        recovered = False
                burst, base = bursts
                done.append(
                    {
                        "burst": burst,
                        "idle": base,
                        "ratio": _over_idle(burst, [base], "req_per_s"),
                        "cpu_ratio": _over_idle(burst, [base], "cpu_us_per_req"),
                        "setup": setup,
                        "load": load,
                    }
                )
                if not recovered or not burst["requests"]:
                    break  # a server that stops serving does so every round
        finally:
            for server in twins:
                server.stop()
        record, median = _median_round(count, done, alive, recovered, stopped, method="twins")
        record["idle_req_per_s"] = median and median["idle"]["req_per_s"]
        record["idle_bursts"] = [r["idle"] for r in done]
        # The baseline's own trouble, which the loaded side's columns do not show.
        record["idle_errors"] = sum(r["idle"].get("errors", 0) for r in done)
        record["idle_wrk_hung"] = any(r["idle"].get("wrk_hung") for r in done)
        return record

    @staticmethod
    def _bursts_at_once(servers, duration):
        """`_burst` on each server at the same time, each by its own wrk:
        a burst result per server, in order."""
        cpu0 = [procs.cpu_seconds(server.pid) for server in servers]
        running = []
        try:
            for server in servers:
                running.append(start_wrk(server.port, duration))
            results = []
            for server, proc, before in zip(servers, running, cpu0, strict=True):
                result = wrk_result(proc, duration)
                cpu = procs.cpu_seconds(server.pid) - before
                result["cpu_s"] = round(cpu, 3)
                if result["requests"]:
                    result["cpu_us_per_req"] = round(cpu * 1e6 / result["requests"], 2)
                results.append(result)
            return results
        finally:
            for proc in running:  # a wrk left behind by a failure above
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def s6(self, spec, p):
        for count in p["counts"]:
            yield self._twins(spec, "S6", "slowup", count, p["duration"], p["rounds"])

    def s7(self, spec, p):
        yield self._under_load(spec, "S7", "slowloris", p["count"], p["duration"])

    def _held_memory(self, spec, mode, count, *options):
        server = self.start(spec, "S8")
        try:
            before, after, held, setup, final = held_memory(server, mode, count, *options)
            alive = server.alive()
        finally:
            server.stop()
        per = (after - before) / held if held > 0 else None
        return {
            "variant": "idle keep-alive" if mode == "idle" else "parked upload",
            "count": count,
            "held": held,
            "rss_before_mib": round(before / MIB, 1),
            "rss_after_mib": round(after / MIB, 1),
            "kib_per_conn": round(per / 1024, 1) if per is not None else None,
            "setup": setup,
            "load": final,
            "server_alive": alive,
        }

    def s9(self, spec, p):
        """Rolling reloads: wrk -c16 on 2 workers while the master gets HUP every
        `every` s; every socket error or non-2xx response is a failed request."""
        server = self.start(spec, "S9", 2)
        try:
            run_wrk(server.port, 1)
            duration = int(p["reloads"] * p["every"] + 3)
            wrk = start_wrk(server.port, duration, connections=16)
            time.sleep(1.0)
            for _ in range(p["reloads"]):
                os.kill(server.pid, signal.SIGHUP)
                time.sleep(p["every"])
            result = wrk_result(wrk, duration)
            alive = server.alive()
            after = run_wrk(server.port, 1)["req_per_s"]
        finally:
            server.stop()
        yield {
            "workers": 2,
            "reloads": p["reloads"],
            "requests": result["requests"],
            "req_per_s": result["req_per_s"],
            "failed": result["errors"] + result["non_2xx"],
            "server_alive": alive,
            "hello_after": after > 0,
        }

    def s10(self, spec, p):
        """`--metrics-bind` on (this spec) against off (the same spec without it):
        `pairs` fresh pairs of servers, both loaded with S1 at the same time
        (`ab.compare_together`)."""
        import ab  # ab.py imports this module: imported late to avoid a cycle

        base = next(s for s in SPECS if s.name == spec.name.removesuffix("-metrics"))
        rows = ab.compare_together(
            base, spec, p["pairs"], p["rounds"], p["duration"], out=lambda _line: None
        )
        cpu, rate = ab.medians(rows)
        ratios = sorted(b[1] / a[1] for _, a, b in rows)
        quarter = len(ratios) // 4
        yield {
            "against": base.name,
            "pairs": p["pairs"],
            "rounds": len(rows),
            "off_cpu_us": round(statistics.median(a[1] for _, a, _ in rows), 2),
            "on_cpu_us": round(statistics.median(b[1] for _, _, b in rows), 2),
            "cpu_ratio": round(cpu, 3),
            "cpu_ratio_iqr": f"{ratios[quarter]:.3f}–{ratios[-1 - quarter]:.3f}",
            "req_ratio": round(rate, 3),
        }

    def s8(self, spec, p):
        yield self._held_memory(spec, "idle", p["count"])
        yield self._held_memory(spec, "slowup", p["count"], "--initial", 4096, "--drip", 0)


SCENARIO_NAMES = {
    "S1": "hello req/s",
    "S2": "concurrent 1 MiB uploads",
    "S3": "one big streamed upload",
    "S4": "streamed download",
    "S5": "early reject of a 100 MiB body",
    "S6": "hello under slow uploaders",
    "S7": "hello under slowloris",
    "S8": "memory per held connection",
    "S9": "failed requests during HUP reloads",
    "S10": "cost of --metrics-bind, both loaded at once",
}


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mem_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
    }


def versions():
    found = {}
    freeze = subprocess.run([PY, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    for line in freeze.splitlines():
        name, _, version = line.partition("==")
        if name.lower() in {
            "gunicorn",
            "gevent",
            "granian",
            "waitress",
            "uwsgi",
            "bjoern",
            "meinheld",
            "pyruvate",
            "greenlet",
        }:
            found[name.lower()] = version
    siesta = next(spec for spec in SPECS if spec.name == "siesta-thread").needs[0]
    if os.path.exists(siesta):
        try:
            done = subprocess.run([siesta, "--version"], capture_output=True, text=True, timeout=20)
            found["siesta"] = (done.stdout or done.stderr).strip().removeprefix("siesta ")[:80]
        except (OSError, subprocess.TimeoutExpired) as error:
            found["siesta"] = f"--version failed: {error}"
    return found


def count_tracebacks(paths):
    """Python tracebacks the servers logged (the app raising, or the server itself)."""
    total = 0
    for path in paths:
        try:
            with open(path, "rb") as handle:
                total += handle.read().count(b"Traceback (most recent call last)")
        except OSError:
            pass
    return total


def not_installed():
    """Optional peers that run.sh could not install, from .venv-peers/install-status.json."""
    path = os.path.join(BENCH, ".venv-peers", "install-status.json")
    try:
        with open(path) as handle:
            status = json.load(handle)
    except (OSError, ValueError):
        return {}
    return {name: state for name, state in status.items() if state != "ok"}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Siesta benchmark runner")
    parser.add_argument("--quick", action="store_true", help="S1 short, S3 256 MiB, S5, S6 x100")
    parser.add_argument("--only", help="comma-separated scenarios, e.g. S1,S5")
    parser.add_argument("--servers", help="comma-separated server names (default: all present)")
    args = parser.parse_args(argv)

    pin_load()  # wrk and client.py inherit it; servers.py pins each server
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    kind = "quick" if args.quick else "full"
    plan = dict(PLANS[kind])
    if args.only:
        wanted = [name for name in args.only.upper().split(",") if name in PLANS["full"]]
        plan = {name: PLANS[kind].get(name) or PLANS["full"][name] for name in wanted}
    specs = SPECS
    if args.servers:
        names = args.servers.split(",")
        specs = [spec for spec in SPECS if spec.name in names]

    run_id = time.strftime("%Y-%m-%d-%H%M%S")
    os.makedirs(RESULTS, exist_ok=True)
    bench = Bench(plan, run_id)
    header = {
        "run": run_id,
        "kind": kind,
        "plan": plan,
        "machine": machine(),
        "pinning": {
            "server_cpus": sorted(SERVER_CPUS) if SERVER_CPUS else "unpinned",
            "load_cpus": sorted(LOAD_CPUS) if LOAD_CPUS else "unpinned",
        },
        "versions": versions(),
        "started": time.time(),
        "servers": {spec.name: spec.note for spec in specs},
        "not_installed": not_installed(),
    }
    with open(os.path.join(RESULTS, f"{run_id}-meta.json"), "w") as handle:
        json.dump(header, handle, indent=1)
    print(f"run {run_id}: {', '.join(plan)} on {len(specs)} servers", flush=True)

    for scenario, params in plan.items():
        path = os.path.join(RESULTS, f"{run_id}-{scenario}.jsonl")
        taking = [spec for spec in specs if scenario in spec.scenarios.split()]
        present = []
        for spec in taking:
            missing = [need for need in spec.needs if not os.path.exists(need)]
            if missing:
                record = {"error": f"skipped: {missing[0]} not found"}
                write_records(path, run_id, scenario, spec, [record], None, [])
            else:
                present.append(spec)
        if scenario in ROUND_ROBIN:
            for spec, records, logs, took in bench.round_robin(scenario, present, params):
                write_records(path, run_id, scenario, spec, records, took, logs)
            continue
        for spec in present:
            records = []
            bench.started_logs = []
            began = time.monotonic()
            try:
                for record in getattr(bench, scenario.lower())(spec, params):
                    records.append(record)
            except (
                ServerFailed,
                RuntimeError,
                OSError,
                ValueError,
                KeyError,
                subprocess.TimeoutExpired,
            ) as error:
                records.append({"error": f"failed: {type(error).__name__}: {str(error)[:400]}"})
            took = time.monotonic() - began
            write_records(path, run_id, scenario, spec, records, took, bench.started_logs)

    header["finished"] = time.time()
    with open(os.path.join(RESULTS, f"{run_id}-meta.json"), "w") as handle:
        json.dump(header, handle, indent=1)
    print(f"run {run_id} done in {header['finished'] - header['started']:.0f} s", flush=True)
    return run_id


def write_records(path, run_id, scenario, spec, records, took, logs):
    """Appends one server's records for a scenario to its JSON lines and prints them."""
    base = {"run": run_id, "scenario": scenario, "server": spec.name}
    tracebacks = count_tracebacks(logs)
    with open(path, "a") as handle:
        for record in records:
            record = {**base, **record}
            if took is not None:
                record["scenario_s"] = round(took, 1)
                record["server_tracebacks"] = tracebacks
                record["logs"] = [os.path.relpath(p, BENCH) for p in logs]
            handle.write(json.dumps(record) + "\n")
            print(f"  {scenario} {spec.name}: {summary(record)}", flush=True)


def summary(record):
    if "error" in record:
        return record["error"]
    keys = [
        "workers",
        "variant",
        "count",
        "req_per_s",
        "p99_ms",
        "cpu_us_per_req",
        "mib_per_s",
        "peak_rss_mib",
        "status",
        "body_bytes_sent",
        "connection",
        "ratio_to_idle",
        "kib_per_conn",
        "cpu_ratio",
        "req_ratio",
        "errors",
        "server_alive",
    ]
    return " ".join(f"{k}={record[k]}" for k in keys if k in record)


if __name__ == "__main__":
    main()
