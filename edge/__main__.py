"""Entry point: `python -m edge` (EDGE_PORT, EDGE_NODE_ID, EDGE_ASYNC_MODE).

The async library must patch the standard library before anything else imports
socket or threading, so the choice is made here from the raw environment.
"""
import os

if (os.environ.get("EDGE_ASYNC_MODE") or "eventlet").lower() == "gevent":
    from gevent import monkey

    monkey.patch_all()
else:
    import eventlet

    eventlet.monkey_patch()

from edge.server import main  # noqa: E402  (must follow monkey patching)

main()
