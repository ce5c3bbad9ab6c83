"""The registry of actions by name: the built-ins plus the `pystol.actions` entry points.

It is also where what the action classes declare is collected: `undo_registry()` is the
table of undo functions (by journal name) of every registered class, plug-ins included,
which the runner and the reaper are given. `register()` refuses a class that would make
that table ambiguous, so two actions can never disagree about how to undo an entry.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

from pydantic import BaseModel

from pystol_worker.actions.base import Action
from pystol_worker.actions.builtin import BUILTIN_ACTIONS
from pystol_worker.safety.revert_journal import UndoFunction, UndoRegistry

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
        self._actions: dict[str, type[Action[Any]]] = {}
        # undo name -> (function, the action that declared it first)
        self._undo: dict[str, tuple[UndoFunction, str]] = {}
        self._entry_points_loaded = False
        self.broken: dict[str, str] = {}  # plug-in entry point -> why it was left out

    def register(self, cls: type[Action[Any]]) -> type[Action[Any]]:
        """Add an action class; ValueError or TypeError (and nothing added) when it cannot
        be run safely next to the ones already here."""
        for attribute in ("name", "description", "target_kind", "Params"):
            if not hasattr(cls, attribute):
                raise TypeError(f"{cls.__qualname__} does not declare {attribute}")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
            raise TypeError(f"{cls.__qualname__}.Params is not a pydantic model")
        existing = self._actions.get(cls.name)
        if existing is not None and existing is not cls:
            raise ValueError(f"action {cls.name!r} is registered twice "
                             f"({existing.__module__} and {cls.__module__})")
        for undo_name, function in cls.undo.items():
            if not callable(function):
                raise TypeError(f"{cls.__qualname__}.undo[{undo_name!r}] is not callable")
            known = self._undo.get(undo_name)
            if known is not None and known[0] is not function:
                raise ValueError(f"undo {undo_name!r} of action {cls.name!r} is already "
                                 f"declared by {known[1]!r} with another function; prefix "
                                 "undo names with the action's name")
        self._actions[cls.name] = cls
        for undo_name, function in cls.undo.items():
            self._undo.setdefault(undo_name, (function, cls.name))
        return cls

    def load_entry_points(self) -> list[str]:
        """Register third-party actions from the `pystol.actions` entry-point group."""
        loaded: list[str] = []
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

    def get(self, name: str) -> Action[Any]:
        cls = self._actions.get(name)
        if cls is None:
            raise UnknownAction(name, self.names())
        return cls()

    def names(self) -> list[str]:
        return sorted(self._actions)

    def classes(self) -> list[type[Action[Any]]]:
        return [self._actions[name] for name in self.names()]

    def undo_registry(self) -> UndoRegistry:
        """The undo functions of every registered action, by the name journal entries carry:
        what reverts a running job's changes, and what the reaper reverts orphans with."""
        return UndoRegistry({name: function for name, (function, _) in self._undo.items()})


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
