"""Thread mode's run loop: start the server, the Python threads, and wait.

The Rust ``Server`` does the I/O; here ``--threads`` Python threads each run
``server.run_thread(app)`` (a Rust loop that takes requests with the GIL
released) so that ``threading`` knows them. ``wait()`` returns once a signal
has stopped the server and drained its connections; the threads then finish
what they hold. Gevent mode has its own loop in ``_gevent.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Any


def serve_threads(server: Any, app: Any, threads: int) -> None:
    """Serves on a started server (``server.start()``) until it stops."""
    pool = [
        threading.Thread(target=server.run_thread, args=(app,), name=f"siesta-{i}", daemon=True)
        for i in range(threads)
    ]
    for t in pool:
        t.start()
    # wait() returns once the server drained, or once the stop's time ran
    # out (--graceful-timeout for TERM): what a thread still holds then is
    # abandoned, so the joins only give finishing threads the server's last
    # moment.
    server.wait()
    deadline = time.monotonic() + server.stop_grace
    for t in pool:
        t.join(max(0.0, deadline - time.monotonic()))
