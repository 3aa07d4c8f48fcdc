"""Payload validation: small checks that raise `invalid_payload` with a clear message."""
from __future__ import annotations

from typing import Any

from .errors import invalid

MAX_ID_LEN = 128


def payload(data: Any) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise invalid("payload must be an object")
    return data


def identifier(data: dict, name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN:
        raise invalid(f"{name} must be a non-empty string of at most {MAX_ID_LEN} characters")
    return value


def integer(data: dict, name: str, *, required: bool = True, minimum: int | None = None,
            default: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise invalid(f"{name} must be at least {minimum}")
    return value


def string(data: dict, name: str, *, required: bool = True, max_len: int | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    return value


def boolean(data: dict, name: str, *, default: bool = False) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean")
    return value


def id_list(data: dict, name: str, *, max_items: int) -> list[str]:
    value = data.get(name)
    if not isinstance(value, list):
        raise invalid(f"{name} must be a list of ids")
    if len(value) > max_items:
        raise invalid(f"{name} takes at most {max_items} ids")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_ID_LEN:
            raise invalid(f"{name} must contain non-empty string ids")
    return list(dict.fromkeys(value))
