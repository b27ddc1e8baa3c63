"""Name -> constructor lookup tables (MECHANISMS, MODELS, DATASETS, ...).

An unknown name raises :class:`PrivtoolError` listing the valid ones, so no
caller grows an if/elif factory.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from privtool.errors import PrivtoolError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors; ``kind`` appears in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("lenet")``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise PrivtoolError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
