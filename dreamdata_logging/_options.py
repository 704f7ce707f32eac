"""Keyword values as they come from code or from config files (dictConfig, fileConfig): strings become
the right types, and a value that can never work is a ``ValueError`` naming the option."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", "", "none"}


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def as_number(name: str, value: Any, kind: Callable[[Any], Any], minimum: float) -> Any:
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    return number


def as_verify(value: Any) -> Union[bool, str]:
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return as_bool("verify", value)
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return bool(value)


def as_path(name: str, value: Any) -> Optional[str]:
    """A file path, or None for None / "" / "none" (from a config file)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise ValueError(f"{name} must be a file path, got {type(value).__name__}")


def as_proxies(value: Any) -> Optional[dict[str, str]]:
    if value is None or value == "":
        return None
    if isinstance(value, str):  # one proxy URL for both schemes, or a JSON object
        text = value.strip()
        return (
            {str(k): str(v) for k, v in json.loads(text).items()}
            if text.startswith("{")
            else {"http": text, "https": text}
        )
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    raise ValueError(f"proxies must be a mapping like {{'https': 'http://proxy:3128'}}, got {type(value).__name__}")


def as_callable(name: str, value: Any) -> Optional[Callable[..., Any]]:
    """A callable, or its import path as text (``"package.module:function"``) from a config file."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        module_name, _, attribute = value.replace(":", ".").rpartition(".")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot import {value!r}: {exc}") from None
    if not callable(value):
        raise ValueError(f"{name} must be callable")
    return value  # type: ignore[no-any-return]
