"""orjson behind the `json` module interface python-socketio and python-engineio call.

Given to socketio.Server(json=...), it encodes and decodes every Socket.IO and
Engine.IO packet of the node and the fan-out messages between nodes. With the
per-recipient work gone from the broadcast path (edge.fastpath, edge.wsconn), the
standard library's encoder had become a visible part of a connect (the Engine.IO
handshake's JSON alone was ~2.5 % of a node's CPU in a connect storm) and decoding
is what every node does for every emit another node publishes.

Output differs from the standard library's only in form: compact always (Socket.IO
packets asked for that already) and non-ASCII text as UTF-8 rather than \\u escapes.
Input is read more strictly: NaN/Infinity literals and lone surrogates are invalid
JSON and refused; integers beyond 64 bits are read as floats.
"""
from __future__ import annotations

import json as _stdlib_json
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(obj: Any, *, separators: tuple[str, str] | None = None, **kwargs: Any) -> str:
    if not kwargs:
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:
            pass    # e.g. an integer beyond 64 bits: the standard library still can
    return _stdlib_json.dumps(obj, separators=separators, **kwargs)


def loads(data: str | bytes, **kwargs: Any) -> Any:
    if kwargs:
        return _stdlib_json.loads(data, **kwargs)
    return orjson.loads(data)
