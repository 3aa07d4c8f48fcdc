"""SIGTERM and SIGINT stop an edge process, whatever it is doing.

A Python signal handler runs in whichever greenlet holds the interpreter when the
signal arrives. The edge used to raise SystemExit from its handler: when that
greenlet was the hub or the accept loop the process exited, but when it was a
socket's handler (most of the time on a busy node) only that greenthread ended,
python-engineio logged "handler error", and the node went on serving until the
supervisor's SIGKILL, `stopwaitsecs` later (a deploy then also waited that long).

So the signal only wakes a greenthread of its own, which raises SystemExit in
the main greenlet, the one running the accept loop: the process unwinds from
there and exits 0. With eventlet, the Python handler does nothing:
`signal.set_wakeup_fd` has the interpreter write the signal's number to a pipe,
at C level, and the greenthread waits on that pipe. gevent runs a handler
registered with `gevent.signal_handler` in a new greenlet already.
"""
from __future__ import annotations

import logging
import os
import signal

import greenlet

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_gevent_handlers: list = []


def _ignore(signum, frame) -> None:
    """The Python-level handler: the work is done by the wakeup fd's reader."""


def install(async_mode: str) -> None:
    """Call from the main greenlet, before it starts serving."""
    main = greenlet.getcurrent()
    if async_mode == "gevent":
        import gevent

        # gevent cancels a handler whose object is collected: keep them.
        _gevent_handlers.extend(gevent.signal_handler(signum, _stop, main, signum) for signum in STOP_SIGNALS)
        return
    import eventlet

    readable, writable = os.pipe()
    os.set_blocking(readable, False)
    os.set_blocking(writable, False)
    signal.set_wakeup_fd(writable)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _ignore)
    eventlet.spawn_n(_wait_then_stop, readable, main)


def _wait_then_stop(readable: int, main: greenlet.greenlet) -> None:
    from eventlet import patcher
    from eventlet.hubs import trampoline

    read = patcher.original("os").read   # eventlet's green read would wait on the hub again
    while True:
        trampoline(readable, read=True)
        try:
            numbers = read(readable, 64)
        except BlockingIOError:
            continue
        # The pipe carries every signal with a Python handler, not only these.
        stops = [n for n in numbers if n in STOP_SIGNALS]
        if stops:
            _stop(main, stops[0])
            return


def _stop(main: greenlet.greenlet, signum: int) -> None:
    log.info("stopping on %s", signal.Signals(signum).name)
    main.throw(SystemExit(0))
