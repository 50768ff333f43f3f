"""Gevent mode (``-k gevent``): the hub loop, and the only place that switches greenlets.

Rust does all network I/O on its own threads and never blocks this one: it
queues new requests and wake tokens and makes one eventfd readable per
batch. Here the hub watches that fd, starts a greenlet per request (at most
``--worker-connections`` at once; the rest wait, and get 503 if they wait
too long), and resumes a parked greenlet when its token comes back. A
greenlet parks when ``wsgi.input`` has no bytes yet or the response queue
is full: Rust's ``_try_*`` calls hand back a park order ``(token, timeout)``
instead of blocking, so no Rust frame is ever on the stack across a switch.
Rust decides every timeout; this module only waits as long as it is told.
The request loop below mirrors thread mode's Rust driver (``wsgi/driver.rs``)
and uses the same Rust calls for everything but switching.
"""

from __future__ import annotations

import collections
import os
import signal
import time
import types

import gevent
import gevent.event
import gevent.monkey
from gevent.hub import get_hub
from gevent.lock import Semaphore
from greenlet import getcurrent, greenlet

from siesta._siesta import ClientDisconnected, leave_if_forked, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Parked greenlets (or threads, `_ThreadParked`) by wake token.
_parked: dict[int, Any] = {}

# The real thread functions (monkey-patching makes `_thread`'s greenlet-based).
_get_ident = gevent.monkey.get_original("_thread", "get_ident")
_allocate_lock = gevent.monkey.get_original("_thread", "allocate_lock")
# The hub's OS thread, once `serve` runs on it.
_hub_ident: int | None = None
# In a child the app forked (gevent's fork copies every greenlet): the
# greenlet that forked. Only it leaves for the server's code; the copies of
# the other requests stop where they would enter it (`_stay_out`), and the
# child starts and refuses nothing (its queue is its parent's).
_forker: greenlet | None = None


def _forked() -> None:
    global _forker
    _forker = getcurrent()


os.register_at_fork(after_in_child=_forked)


def greenlet_stacks_on_abort(fd: int) -> None:
    """While the worker boots, before faulthandler is enabled: a SIGABRT (the master's
    --timeout, for an import that hangs) also writes every greenlet's stack to `fd`.
    An import that waits cooperatively (a patched socket to a database that is down)
    is parked in its greenlet, and faulthandler shows only the OS thread's frames, the
    hub's. faulthandler writes those first and hands the signal on to this handler,
    which runs once the hub checks for signals; an import stuck in C holding the GIL
    never lets it run, and its thread's frames are then the ones faulthandler wrote."""

    def on_abort(signo: int, frame: Any) -> None:
        import gc
        import traceback

        parts = []
        for g in gc.get_objects():
            if isinstance(g, greenlet) and g.gr_frame is not None:
                parts.append(f"Greenlet {g!r} (most recent call last):\n")
                parts.extend(traceback.format_stack(g.gr_frame))
        data = "".join(parts).encode("utf-8", "replace")
        while data:
            try:
                data = data[os.write(fd, data) :]
            except OSError:
                break
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.abort()

    signal.signal(signal.SIGABRT, on_abort)


def _leave_if_forked(exc: BaseException | None = None) -> None:
    """In a forked child, the forking greenlet back in the server's code exits
    (so does any greenlet when the fork ran no Python hook: a C-level fork)."""
    if _forker is None or getcurrent() is _forker:
        leave_if_forked(exc)
    else:
        _stay_out()


def _stay_out() -> None:
    """In a forked child, a copy of another request's greenlet: it never enters
    the server's code (it would answer, or start, its parent's requests); it
    waits for good while the forking greenlet ends the process."""
    while _forker is not None and getcurrent() is not _forker:
        get_hub().switch()


def patch() -> None:
    """gevent's monkey-patching, applied before the app is imported. The hub is made
    here too: it imports modules lazily, which a worker switched to -u's user may
    not be allowed to read."""
    gevent.monkey.patch_all()
    _watch_before_fork(gevent.get_hub().loop)


def _watch_before_fork(loop: Any) -> None:
    """gevent's SIGCHLD handler comes with its first child watcher, which the
    patched ``os.fork`` (``forkpty``, ``posix_spawn``) makes once the child runs: a
    child that ended before that went unseen, and ``waitpid()`` on it waited for
    good (its request stuck until --timeout). gevent's subprocess installs the
    handler before it forks; so do these, wrapped here. Not at the worker's start:
    the handler reaps every child, and an app that makes only children gevent does
    not watch (the original fork, a C extension's) keeps them to itself until
    it uses one of these."""
    install = getattr(loop, "install_sigchld", None)
    original = gevent.monkey.get_original
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        patched = getattr(os, name, None)
        if install is None or patched is None or patched is original("os", name):
            continue

        def watched(*args: Any, _call: Any = patched, **kwargs: Any) -> Any:
            install()
            return _call(*args, **kwargs)

        watched.__name__ = watched.__qualname__ = name
        watched.__doc__ = patched.__doc__
        setattr(os, name, watched)


def _park(token: int, timeout: float | None) -> None:
    """Switches to the hub until ``token`` is woken or ``timeout`` passes.

    A park happens once per response queue's worth of a fast download, so it
    is kept to a bare switch and, with a timeout, one loop timer: only the
    hub resumes a parked greenlet (``_wake``, from its own callback), so the
    greenlet is always parked by the time it is resumed, which is what
    gevent's ``Waiter`` would otherwise check. An exception thrown into the
    greenlet meanwhile (the app's own ``gevent.Timeout``, a kill) leaves
    through the ``finally``, and a wake that comes after finds nothing.

    Called on another OS thread (an app's ``threadpool`` or real thread),
    where switching to this hub is impossible, the thread blocks instead."""
    if _get_ident() != _hub_ident:
        _park_thread(token, timeout)
        return
    hub = get_hub()
    timer = None
    try:
        _parked[token] = getcurrent()
        if timeout is not None:
            timer = hub.loop.timer(timeout)
            # Through `_wake`: a greenlet no longer parked on `token` is left alone.
            timer.start(_wake, token)
        hub.switch()
        if _forker is not None:
            _stay_out()  # a forked child's copy of a request, resumed by its timer
    finally:
        _parked.pop(token, None)
        if timer is not None:
            timer.close()


class _ThreadParked:
    """A park on an OS thread other than the hub's: the thread waits on a
    real lock, held from the start, which the hub's wake releases."""

    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = _allocate_lock()
        self.lock.acquire()

    def switch(self) -> None:
        # Called at most once: whoever pops the token from `_parked` calls it.
        self.lock.release()


# Wake tokens that found nothing parked, the latest few: a thread's park
# registers its token after Rust armed it, so the hub may wake it first.
_early: collections.OrderedDict[int, bool] = collections.OrderedDict()
_EARLY_KEPT = 256


def _park_thread(token: int, timeout: float | None) -> None:
    """Blocks this (non-hub) thread until ``token`` is woken or ``timeout``
    passes; the caller then asks Rust again, as after a park."""
    parked = _ThreadParked()
    _parked[token] = parked
    try:
        if _early.pop(token, False):
            return  # woken before it was parked
        parked.lock.acquire(True, -1 if timeout is None else max(timeout, 0.0))
    finally:
        _parked.pop(token, None)


def _wake(token: int) -> None:
    parked = _parked.pop(token, None)
    if parked is None:
        # Too early for a thread's park, or too late for a greenlet's (a
        # timeout took it): kept a while, then looked at once more, so a
        # thread that registers in between is not missed.
        _early[token] = True
        while len(_early) > _EARLY_KEPT:
            _early.popitem(last=False)
        parked = _parked.pop(token, None)
        if parked is None:
            return
        _early.pop(token, None)
    parked.switch()


class Input:
    """``wsgi.input`` for greenlets: the Rust reader's calls, parking when it would block."""

    __slots__ = ("_raw", "_turn")

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._turn: Semaphore | None = None

    def _wait(self, fn: Any, size: int | None) -> bytes:
        # One greenlet reads at a time: the body keeps one waker, so a second
        # read would take a parked one's place there and leave it asleep. A
        # read in progress holds the turn, parks included; with the turn
        # free, no other greenlet runs until this one switches, so a read
        # that is answered at once (buffered bytes) needs no turn at all.
        turn = self._turn
        if turn is None or not turn.locked():
            data = fn(size, True)
            if type(data) is not tuple:
                return data
            if turn is None:
                turn = self._turn = Semaphore()
            if turn.acquire(blocking=False):
                return self._park_holding(fn, size, turn, data)
            # The pump just armed is this read's (nothing ran since).
            self._raw._retire()
        with turn:
            return self._park_holding(fn, size, None, fn(size, True))

    def _park_holding(self, fn: Any, size: int | None, release: Any, data: Any) -> bytes:
        """Parks until the read is answered, holding the turn; releases
        ``release`` (the turn, when the caller took it) at the end."""
        try:
            while type(data) is tuple:
                _park(*data)
                data = fn(size, False)
        except BaseException:
            # Thrown into the parked greenlet (a Timeout, a kill).
            self._raw._retire()
            raise
        finally:
            if release is not None:
                release.release()
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._wait(self._raw._try_read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._wait(self._raw._try_readline, size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _push(sr: Any, data: Any, written: bool = False) -> bool:
    """Queues one response chunk, parking while the client is slower than the app.

    False means stop: the client is gone, took nothing for ``--body-timeout``
    (the response is then aborted), or the declared length is reached.
    """
    if _forker is not None:
        _leave_if_forked()  # a forked child's: the forker leaves, a copy stays out
    sent = sr._try_push(data, True, written)  # written: write()'s, whose b"" sends the head
    while type(sent) is tuple:
        _park(*sent)
        sent = sr._try_push(data, False)
    return sent


def _handle(req: Any, app: Any) -> None:
    environ, sr = req.begin()
    environ["wsgi.input"] = Input(environ["wsgi.input"])

    def write(data: bytes) -> None:
        if not _push(sr, data, True) and sr._client_gone:
            raise ClientDisconnected("client disconnected while the response was being written")

    def start_response(status: Any, headers: Any, exc_info: Any = None) -> Any:
        sr(status, headers, exc_info)
        return write

    try:
        result = app(environ, start_response)
    except BaseException as exc:  # the app's failure, answered with a 500
        _leave_if_forked(exc)  # a child the app forked, come back: it exits here
        sr._fail(_app_frames(exc))
        sr._close(None)  # no iterable: the body is drained at once
        return
    _leave_if_forked()
    try:
        if not sr._send_fast(result):
            for chunk in result:
                # An empty item sends nothing, not even the head (PEP 3333),
                # and may come before start_response, as in thread mode.
                if type(chunk) is bytes and not chunk:
                    continue
                if not _push(sr, chunk):
                    break
        sr._finish()
    except BaseException as exc:  # after headers: the connection is aborted
        _leave_if_forked(exc)
        sr._fail(_app_frames(exc))
    finally:
        sr._close(result)


def _app_frames(exc: BaseException) -> BaseException:
    """The exception without this module's frames, so its traceback is the
    one thread mode logs (whose driver has no Python frames)."""
    kept = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename != __file__:
            kept.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for t in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return exc.with_traceback(rebuilt)


def serve(server: Any, app: Any, worker_connections: int, queue_timeout: float) -> None:
    """Runs the hub on a started server until it stops, then lets running requests finish.

    A request that waits ``queue_timeout`` seconds (``--queue-timeout``; 0:
    forever) for one of the ``worker_connections`` slots is answered 503.
    """
    global _hub_ident
    _hub_ident = _get_ident()
    expired_after = queue_timeout or float("inf")
    hub = gevent.get_hub()
    waiting: collections.deque[tuple[float, Any]] = collections.deque()
    stopped = gevent.event.Event()
    running = 0
    # Made only once the hub stops, to wait for the requests still running:
    # under load the running count touches 0 at nearly every request.
    idle: gevent.event.Event | None = None

    def run(req: Any) -> None:
        # A bare greenlet whose parent is the hub, started by a direct switch
        # from the hub's callback: no scheduling round trip. One greenlet per
        # request, never reused: gevent's threading.local and contextvars are
        # per greenlet, so a reused one would show a request its
        # predecessor's locals (and a stray throw aimed at an old request
        # would land in a new one).
        nonlocal running
        try:
            _handle(req, app)
        except BaseException as exc:  # never let a request take the hub down
            log("error", f"Error handling request: {exc!r}")
        finally:
            running -= 1
            if _forker is not None:
                pass  # a forked child starts nothing: the queue is its parent's
            elif waiting:
                hub.loop.run_callback(drain_waiting)
            elif running == 0 and idle is not None:
                idle.set()

    def start(req: Any) -> None:
        nonlocal running
        running += 1
        if not ticker.active:
            ticker.start(tick)
            server.hub_busy()
        greenlet(run, parent=hub).switch(req)

    def tick() -> None:
        # The hub's beat while it runs requests: a hub held by a greenlet
        # that does not yield misses it, and its worker stops accepting
        # (others take the connections). Stopped, lazily, once idle.
        server.hub_beat()
        if running == 0:
            ticker.stop()
            server.hub_idle()

    def drain_waiting() -> None:
        now = time.monotonic()
        while waiting and running < worker_connections:
            since, req = waiting.popleft()
            if now - since > expired_after:
                req.reject()
            elif not req.gone():  # a client that left while it waited gets no run
                start(req)

    def on_ready() -> None:
        for item in server.hub_take():
            try:
                if item is None:
                    stopped.set()
                elif type(item) is int:
                    _wake(item)
                elif running < worker_connections and not waiting:
                    start(item)
                else:
                    waiting.append((time.monotonic(), item))
            except Exception as exc:  # one item's failure must not drop the batch
                log("error", f"Error in the hub's dispatch: {exc!r}")
        if running == 0 and not waiting and not ticker.active:
            server.hub_idle()  # a request taken but not run: no tick would say so

    def expire() -> None:
        # Also the hub's heartbeat: a hub held by a greenlet that never
        # yields stops beating, and the master's --timeout replaces the worker.
        period = min(server.beat_interval, expired_after / 4)
        while not stopped.is_set():
            if _forker is not None:
                if _forker.dead:
                    # A forked child whose forking greenlet ended (one the
                    # app spawned) would idle on as a copy of the worker.
                    leave_if_forked()
                gevent.sleep(period)
                continue  # and refuses nothing of its parent's queue
            server.hub_beat()
            gevent.sleep(period)
            now = time.monotonic()
            while waiting and now - waiting[0][0] > expired_after:
                waiting.popleft()[1].reject()

    ticker = hub.loop.timer(server.hub_tick, server.hub_tick, ref=False)
    watcher = hub.loop.io(server.hub_fd(), 1)
    watcher.start(on_ready)
    janitor = gevent.spawn(expire)
    try:
        stopped.wait()
    finally:
        watcher.stop()
        ticker.stop()
        janitor.kill(block=False)
        # Popped, not just answered: a request ending below would start them.
        while waiting:
            waiting.popleft()[1].reject()
        # The server drained its connections before it said stop; requests
        # still running (their responses sent, say a slow close()) get what
        # is left of the stop's time, one second at least.
        if running:
            idle = gevent.event.Event()
            deadline = time.monotonic() + server.grace_left
            while not idle.is_set() and (left := deadline - time.monotonic()) > 0:
                idle.wait(timeout=min(left, 0.1))
                # An INT or QUIT meanwhile shortens it (to that fast stop's second).
                deadline = min(deadline, time.monotonic() + server.grace_left)
