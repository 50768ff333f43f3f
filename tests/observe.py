"""Helpers for tests of `--metrics-bind`: find the endpoint, scrape it, poll until a condition.

`metrics_url(srv)` reads the master's `Metrics at: URL (pid: N)` line;
`scrape(url)` parses /metrics with the official Prometheus text parser into
{(sample name, sorted labels): value}; `value(samples, name, **labels)` reads
one; `status(url)` is /status.json; `wait_until(fn)` polls a condition with a
bound and returns its last value (tests assert on it, never on timing).
"""

import json
import re
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from siesta_process import wait_until  # noqa: F401 (used by the tests that import from here)

METRICS_AT = re.compile(r"Metrics at: (http://[\d.]+:\d+) \(pid: (\d+)\)")


def metrics_url(srv, timeout=15.0):
    match = srv.wait_log(METRICS_AT.pattern, timeout=timeout)
    assert match, f"no 'Metrics at:' line:\n{srv.log()}"
    return match.group(1)


def get(url, timeout=5.0):
    """(status, body text) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def families(url):
    status, text = get(url + "/metrics")
    assert status == 200, text
    return list(text_string_to_metric_families(text))


def scrape(url):
    samples = {}
    for fam in families(url):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def status(url):
    code, text = get(url + "/status.json")
    assert code == 200, text
    return json.loads(text)


def all_ready(url, workers):
    """Every one of `workers` workers is up and /readyz says so."""
    doc = status(url)
    ready = [w for w in doc["workers"] if w["phase"] == "ready"]
    return doc["ready"] and len(ready) == workers
