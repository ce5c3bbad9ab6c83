"""The action catalogue: every fault Pystol can inject, registered by name.

`pystol_worker.actions.builtin` lists the built-in action classes; third-party ones
come from the `pystol.actions` entry-point group. `default_registry()` registers both,
once per process; tests build their own `ActionRegistry` when they need a different
catalogue. Each class declares what the registry collects from it (its undo functions,
whether it takes pods): importing an action module registers nothing by itself.

A plug-in imports its whole contract from here: `Action`, `ActionError`, `Selection`,
`SelectContext`, `RunContext`, `JournalEntry`.
"""

from __future__ import annotations

from pystol_worker.actions.base import (
    Action,
    ActionError,
    JournalEntry,
    NoParams,
    PermanentError,
    RunContext,
    SelectContext,
    Selection,
    UndoFunction,
)
from pystol_worker.actions.registry import ActionRegistry, UnknownAction, default_registry

__all__ = ["Action", "ActionError", "ActionRegistry", "JournalEntry", "NoParams",
           "PermanentError", "RunContext", "SelectContext", "Selection", "UndoFunction",
           "UnknownAction", "default_registry"]
