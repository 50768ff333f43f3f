"""What a server process tree costs: CPU seconds, resident memory and sockets, from /proc.

A server is measured as its whole tree (master, workers and their threads):
`tree_pids` walks /proc/PID/task/*/children, `cpu_seconds` adds utime+stime of
every process in the tree (`cpu_ns` the run time of its threads, finer),
`rss_bytes` adds their VmRSS, `socket_count` counts the distinct sockets they
hold, `steal_ms` reads how long the hypervisor kept CPUs from this machine.
`RssSampler` polls the tree every 50 ms in a
background thread and keeps the peak. This module only reads /proc; starting
and stopping servers is `servers.py`'s job.
"""

import os
import threading

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid):
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def tree_pids(root):
    """The root PID and all its living descendants."""
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        if os.path.exists(f"/proc/{pid}"):
            pids.append(pid)
            queue.extend(_children(pid))
    return pids


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def start_time(pid):
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(root):
    """User + system CPU seconds consumed so far by every living process of the tree."""
    total = 0
    for pid in tree_pids(root):
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        # fields[0] is field 3 (state): utime is field 14, stime field 15.
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def cpu_ns(root):
    """CPU nanoseconds run so far by every living thread of the tree (from
    /proc/PID/task/TID/schedstat: finer than `cpu_seconds`' clock ticks, but
    blind to threads that already exited; for short, steady measurements)."""
    total = 0
    for pid in tree_pids(root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                    total += int(handle.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def rss_bytes(root):
    """Sum of the resident set sizes of the tree (shared pages count once per process)."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def socket_count(root):
    """Distinct sockets (by inode) held open by the tree: listeners plus accepted connections."""
    inodes = set()
    for pid in tree_pids(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:"):
                inodes.add(target)
    return len(inodes)


def steal_ms(cpus):
    """Steal time so far (ms) summed over `cpus` (all when None): time the
    hypervisor ran something else while these virtual CPUs had work, from
    /proc/stat. On this kind of VM it moves by 30x between 5 s bursts, and
    latency percentiles move with it."""
    total = 0
    with open("/proc/stat") as stat:
        for line in stat:
            fields = line.split()
            if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
                continue
            if cpus is None or int(fields[0][3:]) in cpus:
                total += int(fields[8]) if len(fields) > 8 else 0
    return total * 1000 // _TICK


class RssSampler:
    """Samples a tree's RSS every `interval` seconds until stopped; keeps the peak."""

    def __init__(self, root, interval=0.05):
        self.root = root
        self.interval = interval
        self.baseline = rss_bytes(root)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            value = rss_bytes(self.root)
            self.samples += 1
            self.peak = max(self.peak, value)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2)
        return False
