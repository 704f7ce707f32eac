"""Celery: what is bound when a task is sent is bound while it runs; the handler survives the worker's logging set-up.

::

    from celery import Celery
    import dreamdata_logging.celery

    app = Celery("shop", broker="redis://localhost")
    dreamdata_logging.celery.setup()

Call ``setup()`` once, in the module that creates the Celery app (so both the web process that sends
tasks and the worker that runs them execute it). It connects to Celery's signals:

- ``before_task_publish``: what :func:`dreamdata_logging.bind` has bound where ``delay()`` /
  ``apply_async()`` is called (user id, anonymous id, context, integrations) goes into the task
  message's headers, as JSON text under ``dreamdata_bound``;
- ``task_prerun`` / ``task_postrun``: in the worker, those values are bound while the task runs, and
  only then: a task sent with nothing bound runs with nothing bound, and nothing stays bound from
  one task to the next. Tasks run eagerly (``task_always_eager``, ``apply()``) already run in the
  caller's context and are left alone;
- ``celeryd_init`` / ``after_setup_logger``: a Celery worker removes the root logger's handlers when it
  sets up logging (unless ``worker_hijack_root_logger=False``); every ``DreamdataHandler`` that was on
  the root logger (or the ``celery`` logger) before is attached again afterwards.

Celery is imported only when ``setup()`` is called.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Optional

from dreamdata_logging.events import encoding
from dreamdata_logging.events.bind import bind, bound

#: The task-message header that carries the bound values.
HEADER = "dreamdata_bound"

_FIELDS = {"userId": str, "anonymousId": str, "context": dict, "integrations": dict}
_binds: dict[str, bind] = {}  # task id -> the bind entered for it, until task_postrun
_kept: list[tuple[str, logging.Handler]] = []  # (logger name, handler) to attach again after Celery's set-up
_setup_lock = threading.Lock()
_done = False


def setup() -> None:
    """Connect to Celery's signals (see the module's description). Calling it again does nothing."""
    global _done
    signals: Any = importlib.import_module("celery.signals")  # imported here: only setup() needs Celery

    with _setup_lock:
        if _done:
            return
        _done = True
    _remember_handlers()
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="dreamdata_logging.publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="dreamdata_logging.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="dreamdata_logging.postrun")
    signals.celeryd_init.connect(_on_worker_init, weak=False, dispatch_uid="dreamdata_logging.worker_init")
    signals.after_setup_logger.connect(_on_logging_set_up, weak=False, dispatch_uid="dreamdata_logging.logging")


# -- identity in the task message ------------------------------------------------------------------


def _on_publish(headers: Optional[dict[str, Any]] = None, **_: Any) -> None:
    values = bound()
    if not values or headers is None:
        return
    try:
        headers[HEADER] = encoding.dumps(values).decode("utf-8")
    except Exception:  # never fail a publish over analytics
        pass


def _bound_from(request: Any) -> Optional[dict[str, Any]]:
    """The values a task message carries, checked, or None."""
    text = getattr(request, HEADER, None)
    if text is None:
        headers = getattr(request, "headers", None)  # older message protocol: custom headers kept apart
        text = headers.get(HEADER) if isinstance(headers, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {key: value for key, value in data.items() if key in _FIELDS and isinstance(value, _FIELDS[key])} or None


def _on_prerun(task_id: Optional[str] = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False) or task_id is None:
        return  # run eagerly: the caller's own bindings are in force already
    values = _bound_from(request) or {}
    try:
        binding = bind(
            user_id=values.get("userId") or None,
            anonymous_id=values.get("anonymousId") or None,
            context=values.get("context"),
            integrations=values.get("integrations"),
        )
    except (TypeError, ValueError):  # never fail a task over analytics; _bound_from checked the types
        return
    # Entered as ``with bind(...)`` would be, and left at task_postrun: a worker runs its tasks with
    # nothing bound around them, so the task sees what its message carries and nothing more.
    _binds[task_id] = binding.__enter__()


def _on_postrun(task_id: Optional[str] = None, **_: Any) -> None:
    binding = _binds.pop(task_id, None) if task_id is not None else None
    if binding is None:
        return
    try:
        binding.__exit__(None, None, None)
    except (RuntimeError, ValueError):  # postrun in another context than prerun: nothing to leave here
        pass


# -- the worker's logging set-up -------------------------------------------------------------------


def _remember_handlers() -> None:
    from dreamdata_logging._handler import DreamdataHandler

    for name in ("", "celery"):
        for handler in logging.getLogger(name or None).handlers:
            if isinstance(handler, DreamdataHandler) and (name, handler) not in _kept:
                _kept.append((name, handler))


def _on_worker_init(**_: Any) -> None:
    _remember_handlers()  # logging as configured by now, just before the worker replaces the root's handlers


def _on_logging_set_up(**_: Any) -> None:
    for name, handler in _kept:
        logger = logging.getLogger(name or None)
        if handler not in logger.handlers:  # a handler closed meanwhile reopens on its next event
            logger.addHandler(handler)
