"""Thread mode's run loop: start the server, the Python threads, and wait.

The Rust ``Server`` does the I/O; here Python threads each run
``server.run_thread(app)`` (a Rust loop that takes requests with the GIL
released) so that ``threading`` knows them. ``--threads`` start at once; the
pool asks for more through ``spawn`` (``server.grow_with``) while requests
wait on the network, and those leave by themselves once idle. ``wait()``
returns once a signal has stopped the server and drained its connections;
the threads then finish what they hold. Gevent mode has its own loop in
``_gevent.py``.
"""

from __future__ import annotations

import itertools
import threading
import time

from siesta._siesta import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def serve_threads(server: Any, app: Any, threads: int) -> None:
    """Serves on a started server (``server.start()``) until it stops."""
    pool: list[threading.Thread] = []
    numbers = itertools.count()
    lock = threading.Lock()

    def spawn() -> None:
        """Starts one pool thread (called here, then by the pool's monitor with the GIL)."""
        thread = threading.Thread(
            target=server.run_thread, args=(app,), name=f"siesta-{next(numbers)}", daemon=True
        )
        thread.start()
        with lock:
            pool[:] = [t for t in pool if t.is_alive()]
            pool.append(thread)

    server.grow_with(spawn)
    for n in range(threads):
        try:
            spawn()
        except RuntimeError as exc:  # "can't start new thread": a pids or memory limit
            if not str(exc).startswith("can't start new thread"):
                raise  # an app's signal handler that ran here raised it
            if n == 0:
                raise  # none at all: a crash, replaced after a pause if it recurs
            log("warning", f"Serving with {n} of --threads {threads} threads: {exc}")
            break
    # wait() returns once the server drained (its connections closed), or
    # once the stop's time ran out (--graceful-timeout for TERM). An app may
    # still run with its response sent (a HEAD's or a 204's iterable, a slow
    # close()): the joins give it what is left of the stop's time, one
    # second at least; what a thread still holds then is abandoned. The pool
    # starts no thread once stopped.
    server.wait()
    deadline = time.monotonic() + server.grace_left
    with lock:
        started = list(pool)
    for t in started:
        while True:
            # An app's signal handler may run at any line here, and raise.
            try:
                if not t.is_alive() or (left := deadline - time.monotonic()) <= 0:
                    break
                t.join(min(left, 0.1))
                # An INT or QUIT during the wait shortens it (grace_left is then
                # that fast stop's second).
                deadline = min(deadline, time.monotonic() + server.grace_left)
            except BaseException as exc:  # noqa: BLE001 - the handler's, not the stop's
                _handler_raised(exc)


def _handler_raised(exc: BaseException) -> None:
    """A Python signal handler of the app raised while the stopping worker waits for
    its threads: the stop goes on (review, session 42: it crashed the worker and
    skipped ``worker_exit``). ``SystemExit`` and ``KeyboardInterrupt`` ask for what
    is under way; another exception is logged."""
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return
    from siesta._pylog import traceback_text

    log(
        "error",
        "Exception in a signal handler of the app:\n" + traceback_text(exc, exc.__traceback__),
    )
