"""The registry of actions by name, filled by decorators and entry points."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import metadata

from pystol_worker.actions.base import Action
from pystol_worker.actions.builtin import BUILTIN_ACTIONS

ENTRY_POINT_GROUP = "pystol.actions"
log = logging.getLogger("pystol.actions")


class UnknownAction(KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown action {self.name!r}; known actions: {', '.join(self.known)}"


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, type[Action]] = {}
        self._entry_points_loaded = False
        self.broken: dict[str, str] = {}  # plug-in entry point -> why it was left out

    def register(self, cls: type[Action]) -> type[Action]:
        existing = self._actions.get(cls.name)
        if existing is not None and existing is not cls:
            raise ValueError(f"action {cls.name!r} is registered twice "
                             f"({existing.__module__} and {cls.__module__})")
        self._actions[cls.name] = cls
        return cls

    def action(self) -> Callable[[type[Action]], type[Action]]:
        """Class decorator: `@registry.action()` registers an Action subclass by its name."""
        return self.register

    def load_entry_points(self) -> list[str]:
        """Register third-party actions from the `pystol.actions` entry-point group."""
        loaded = []
        if self._entry_points_loaded:
            return loaded
        self._entry_points_loaded = True
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            # A broken plug-in must not take the API or the workers down with it: it is
            # left out, loudly, and the built-in catalogue keeps working.
            try:
                cls = entry.load()
                if not (isinstance(cls, type) and issubclass(cls, Action)):
                    raise TypeError("not an Action subclass")
                self.register(cls)
            except Exception as error:
                log.error("action plug-in %s = %s could not be loaded and is left out: %s",
                          entry.name, entry.value, error)
                self.broken[entry.name] = f"{entry.value}: {error}"
                continue
            loaded.append(cls.name)
        return loaded

    def get(self, name: str) -> Action:
        cls = self._actions.get(name)
        if cls is None:
            raise UnknownAction(name, self.names())
        return cls()

    def names(self) -> list[str]:
        return sorted(self._actions)

    def classes(self) -> list[type[Action]]:
        return [self._actions[name] for name in self.names()]


def default_registry() -> ActionRegistry:
    """The built-in actions plus every installed plug-in, built once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        registry = ActionRegistry()
        for cls in BUILTIN_ACTIONS:
            registry.register(cls)
        registry.load_entry_points()
        _DEFAULT = registry
    return _DEFAULT


_DEFAULT: ActionRegistry | None = None
