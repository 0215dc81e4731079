"""Explicit registries: ``@METHODS.register("sd_lora", SDLoRAConfig)``; a miss lists the valid names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    config_cls: type
    doc: str
    info: Any = None  # what the rest of the system knows about it (methods.base.MethodInfo, benchmarks.base.BenchmarkInfo)


class Registry(Generic[T]):
    def add_resolver(self, prefix: str, resolve: Callable[[str], Entry[T]]) -> None:
        """Names ``prefix:rest`` are resolved on demand by ``resolve(rest)`` (e.g. ``avalanche:EWC``)."""
        self._resolvers[prefix] = resolve

    def __init__(self, kind: str, default_info: Callable[[str], Any] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._resolvers: dict[str, Callable[[str], Entry[T]]] = {}
        self._default_info = default_info or (lambda name: None)

    def register(self, name: str, config_cls: type, doc: str | None = None, info: Any = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; ``doc`` (default: first docstring line) shows in --list;
        ``info`` (default: derived from the name by the registry's ``default_info``) is what the rest must know."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            first = ((getattr(obj, "__doc__", None) or "").strip().splitlines() or [""])[0]
            doc_line = doc or first
            self._entries[name] = Entry(name, obj, config_cls, doc_line, info or self._default_info(name))
            return obj

        return decorator

    def get(self, name: str) -> Entry[T]:
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._resolvers and name not in self._entries:
            self._entries[name] = self._resolvers[prefix](rest)
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; valid names are: {', '.join(self.names())} "
                            f"(a {self.kind} defined in a plugin file needs run_suite.py --import FILE)")
        return self._entries[name]

    def info(self, name: str) -> Any:
        """The info of a registered (or resolvable) name; for any other name, the info derived from it alone."""
        try:
            return self.get(name).info
        except UserError:
            return self._default_info(name)

    def names(self) -> list[str]:
        return sorted(self._entries) + [f"{p}:<name>" for p in sorted(self._resolvers)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def make_config(self, name: str, data: dict[str, Any] | None, where: str = "") -> Any:
        return self.get(name).config_cls.from_dict(data, where=where or f"{self.kind} {name}")
