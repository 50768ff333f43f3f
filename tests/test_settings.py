"""Issue 11: every option is defined once, and the Rust core reads exactly what it is sent.

The settings table marks with ``rust=True`` what goes to Rust; the Rust
``Settings`` struct publishes its fields as ``SETTINGS_FIELDS``. The two sets
must be equal (a key sent and not read, or read and not sent, fails here),
Rust must refuse a dict with a key it does not read, and aliases (worker
classes, log levels) are resolved by the table before Rust sees them.
"""

import pytest
from siesta import _siesta
from siesta._sources import resolve
from siesta.config import SETTINGS, for_rust


def resolve_values(argv):
    return resolve(argv, environ={}).values


def test_sent_equals_read():
    sent = {s.name for s in SETTINGS if s.rust}
    assert sent == set(_siesta.SETTINGS_FIELDS)


def test_rust_refuses_an_unread_key():
    values = resolve_values(["app:app", "-b", "127.0.0.1:0"])
    settings = for_rust(values)
    settings["no_such_setting"] = 1
    with pytest.raises(ValueError, match="no_such_setting"):
        _siesta.Server(settings)


def test_rust_refuses_a_missing_key():
    settings = for_rust(resolve_values(["app:app", "-b", "127.0.0.1:0"]))
    del settings["body_timeout"]
    with pytest.raises((ValueError, KeyError, TypeError), match="body_timeout"):
        _siesta.Server(settings)


@pytest.mark.parametrize(("given", "canonical"), [("gthread", "thread"), ("sync", "thread")])
def test_aliases_resolved_by_the_table(given, canonical):
    assert for_rust(resolve_values(["app:app", "-k", given]))["worker_class"] == canonical


def test_rust_takes_only_canonical_names():
    settings = for_rust(resolve_values(["app:app", "-b", "127.0.0.1:0"]))
    settings["worker_class"] = "gthread"
    with pytest.raises(ValueError, match="worker class"):
        _siesta.Server(settings)
    settings["worker_class"] = "thread"
    settings["log_level"] = "warn"
    with pytest.raises(ValueError, match="log level"):
        _siesta.Server(settings)
