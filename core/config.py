"""Frozen config dataclasses built from plain dicts (YAML), with strict key checking and named presets.

Every method and benchmark declares a frozen dataclass. ``from_dict`` is the only way a suite file turns
into a config: unknown keys are an error that lists the valid ones, and ``__post_init__`` of each class
rejects impossible values (rank 0, negative learning rate) with a :class:`UserError`.

Presets: a config class may define ``PRESETS = {"name": {field: value}}``. ``{"preset": "name", ...}``
fills the preset's values for every field the user did not set; the preset's name is kept in the config
(field ``preset``) so that every result records which recipe produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, ClassVar

from core.errors import UserError


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config dataclass."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "") -> Config:
        """Build a config from a dict, rejecting unknown keys and applying a preset."""
        data = dict(data or {})
        label = where or cls.__name__
        valid = cls.field_names()
        unknown = sorted(str(k) for k in data if k not in valid)  # YAML keys may be numbers
        if unknown:
            raise UserError(f"{label}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(valid)}")
        preset = data.get("preset")
        if preset is not None:
            if not isinstance(preset, str) or preset not in cls.PRESETS:
                raise UserError(
                    f"{label}: unknown preset {preset!r}; valid presets are: {', '.join(sorted(cls.PRESETS)) or 'none'}"
                )
            data = {**cls.PRESETS[preset], **data}
        hints = typing.get_type_hints(cls)
        for key, value in list(data.items()):
            data[key] = _coerce(value, hints.get(key), f"{label}.{key}")
        try:
            return cls(**data)
        except UserError as err:
            raise UserError(f"{label}: {err}") from None
        except TypeError as err:  # wrong argument types that slipped through
            raise UserError(f"{label}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Config):
        return value.to_dict()
    return value


def _coerce(value: Any, hint: Any, label: str) -> Any:
    """Turn YAML values into the declared field type (lists -> tuples, ints -> floats)."""
    if hint is None or value is None:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(value, non_none[0], label)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{label}: expected a list, got {value!r}")
        inner = args[0] if args else None
        return tuple(_coerce(v, inner, label) for v in value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-3" as a string
        except ValueError:
            raise UserError(f"{label}: expected a number, got {value!r}") from None
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise UserError(f"{label}: expected {hint.__name__}, got {value!r}")
    return value


def check(condition: bool, message: str) -> None:
    """Raise a :class:`UserError` with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise UserError(message)


def stable_hash(obj: Any) -> str:
    """Content hash of a JSON-serialisable object (sorted keys), used as the cache key of a job."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
