"""A tracking plan: which events a team sends and what their properties and traits look like.

A plan file (YAML or JSON) names each track event with a JSON Schema for its ``properties``, and holds
a ``traits`` schema for ``identify`` and ``group``::

    track:
      Signed Up:
        properties: {type: object, required: [plan], properties: {plan: {enum: [free, pro]}}}
    identify:
      traits: {type: object, properties: {email: {type: string}}}
    allow_unknown_events: false

Each schema is compiled once, when the plan is loaded, by ``fastjsonschema`` (the ``plan`` extra);
checking a message then costs about a microsecond. The handler, ``dreamdata-logging plan check`` and the
collector all check with :class:`TrackingPlan`. A message breaks the plan at most once: the first
failing field is the one named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

__all__ = ["PlanError", "TrackingPlan", "Violation", "load_plan"]

_TOP_KEYS = ("track", "identify", "group", "allow_unknown_events")
_INSTALL = 'pip install "dreamdata-logging[plan]"'
_VALUE_CHARS = 60

Validator = Callable[[Any], Any]


class PlanError(ValueError):
    """The tracking plan cannot be used: unreadable, not a plan, or a schema that does not compile."""


@dataclass(frozen=True)
class Violation:
    """How one message breaks the plan: its type and event name, the failing field, why, and the value."""

    type: str
    event: str  # the track's event name; "identify" or "group" for traits
    field: str  # "properties.plan", "traits.email", "event"
    reason: str
    value: Any = None

    @property
    def kind(self) -> str:
        """What is rate-limited in reports: one kind per event name and field."""
        return f"{self.type}:{self.event}:{self.field}"

    def __str__(self) -> str:
        """Event, field and why, without the value (a report may go where personal data must not)."""
        where = f'{self.type} "{self.event}"' if self.type == "track" else self.type
        return f"{where}: {self.field} {self.reason}"

    def with_value(self) -> str:
        """Event, field, why and the (shortened) value."""
        return f"{self} (value: {show_value(self.value)})"


def show_value(value: Any) -> str:
    """A value as JSON, shortened: enough to recognise it in a report."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (ValueError, TypeError, RecursionError):
        text = repr(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _compiler() -> Any:
    try:
        import fastjsonschema
    except ImportError:
        raise PlanError(f"a tracking plan needs the fastjsonschema package: {_INSTALL}") from None
    return fastjsonschema


class TrackingPlan:
    """Compiled validators for a plan's events; :meth:`check` says how a message breaks it, if it does."""

    def __init__(self, plan: Any, source: str = "the tracking plan") -> None:
        if not isinstance(plan, Mapping):
            raise PlanError(f"{source} must be a mapping with 'track', 'identify', 'group' keys")
        unknown = [key for key in plan if key not in _TOP_KEYS]
        if unknown:
            raise PlanError(f"{source}: unknown key {unknown[0]!r}; expected {', '.join(_TOP_KEYS)}")
        self.source = source
        self._lib = _compiler()
        allow = plan.get("allow_unknown_events", False)
        if not isinstance(allow, bool):
            raise PlanError(f"{source}: allow_unknown_events must be true or false, not {allow!r}")
        self.allow_unknown_events = allow
        events = plan.get("track") or {}
        if not isinstance(events, Mapping):
            raise PlanError(f"{source}: 'track' must map event names to their schemas")
        self.track: dict[str, Optional[Validator]] = {
            str(name): self._section(spec, "properties", f"track {name!r}") for name, spec in events.items()
        }
        self.traits: dict[str, Optional[Validator]] = {
            kind: self._section(plan[kind], "traits", kind) for kind in ("identify", "group") if kind in plan
        }

    def _section(self, spec: Any, field: str, where: str) -> Optional[Validator]:
        """The compiled schema of ``spec[field]`` (None: anything goes)."""
        if spec is None:
            return None
        if not isinstance(spec, Mapping) or any(key != field for key in spec):
            raise PlanError(f"{self.source}: {where} must hold only '{field}:' (a JSON Schema)")
        schema = spec.get(field)
        if schema is None:
            return None
        if not isinstance(schema, (Mapping, bool)):
            raise PlanError(f"{self.source}: {where} {field} must be a JSON Schema (a mapping)")
        try:
            # No "default" filling (it would change the caller's data) and no fetching of a remote $ref.
            compiled = self._lib.compile(schema, handlers=_NO_REMOTE, use_default=False)
            return compiled  # type: ignore[no-any-return]
        except Exception as exc:  # JsonSchemaDefinitionException, or a schema it cannot turn into code
            raise PlanError(f"{self.source}: {where} {field} is not a usable JSON Schema: {exc}") from None

    def check(self, message: Mapping[str, Any], kind: Optional[str] = None) -> Optional[Violation]:
        """How ``message`` (a whole message; ``kind`` when its ``type`` was taken out) breaks the plan."""
        if kind is None:
            kind = message.get("type", "track")
        if kind == "track":
            name = message.get("event")
            if not isinstance(name, str) or name not in self.track:
                if self.allow_unknown_events:
                    return None
                return Violation("track", str(name), "event", "is not in the tracking plan", name)
            return self._run(self.track[name], message, "track", name, "properties")
        validator = self.traits.get(kind)
        if validator is None:
            return None
        return self._run(validator, message, kind, kind, "traits")

    def _run(
        self, validator: Optional[Validator], message: Mapping[str, Any], kind: str, event: str, field: str
    ) -> Optional[Violation]:
        if validator is None:
            return None
        value = message.get(field)
        data = {} if value is None else value
        try:
            validator(data)
            return None
        except self._lib.JsonSchemaValueException as exc:
            return _violation(exc, kind, event, field)

    def confirm(self, message: Mapping[str, Any], kind: str, to_json: Callable[[Any], Any]) -> Optional[Violation]:
        """Check again with the properties or traits as they are sent (``to_json``: dates become text...)."""
        field = "properties" if kind == "track" else "traits"
        if message.get(field) is None:
            return self.check(message, kind)
        return self.check({**message, field: to_json(message[field])}, kind)


def _no_remote(uri: str) -> Any:
    raise PlanError(f"schemas must be self-contained: a remote $ref ({uri}) is never fetched")


_NO_REMOTE = {"http": _no_remote, "https": _no_remote, "ftp": _no_remote, "file": _no_remote}


def _violation(exc: Any, kind: str, event: str, field: str) -> Violation:
    """A fastjsonschema error as a field (``data.plan`` -> ``properties.plan``) and a reason."""
    name = str(getattr(exc, "name", "data"))
    message = str(getattr(exc, "message", exc))
    reason = message[len(name) :].strip() if message.startswith(name) else message
    value = getattr(exc, "value", None)
    if getattr(exc, "rule", None) == "required" and isinstance(value, Mapping):
        wanted = getattr(exc, "definition", {}).get("required", [])
        missing = [key for key in wanted if key not in value]
        if missing:
            return Violation(kind, event, _field(name, field) + f".{missing[0]}", "is required but missing", None)
    return Violation(kind, event, _field(name, field), reason, value)


def _field(name: str, field: str) -> str:
    return field + name[4:] if name.startswith("data") else f"{field}.{name}"


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read the tracking plan {path}: {exc}") from None
    if path.lower().endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise PlanError(f"the tracking plan {path} is not valid JSON: {exc}") from None
    try:
        import yaml
    except ImportError:
        raise PlanError(f"a YAML tracking plan needs PyYAML ({_INSTALL}); or write it as .json") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanError(f"the tracking plan {path} is not valid YAML: {exc}") from None


def load_plan(plan: Union[str, os.PathLike[str], TrackingPlan]) -> TrackingPlan:
    """A plan from its file (``.json`` is JSON, anything else YAML), compiled; a plan is returned as is."""
    if isinstance(plan, TrackingPlan):
        return plan
    path = os.fspath(plan)
    _compiler()  # the missing extra first: it is the clearer error
    return TrackingPlan(_read(path), path)
