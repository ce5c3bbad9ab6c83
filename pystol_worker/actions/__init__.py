"""The action catalogue: every fault Pystol can inject, registered by name.

Built-in actions register themselves with the `@registry.action` decorator when
`pystol_worker.actions.builtin` is imported; third-party ones come from the
`pystol.actions` entry-point group. The registry is the only module-level
mutable state: tests build their own `ActionRegistry` when they need a
different catalogue.
"""

from __future__ import annotations

from pystol_worker.actions.base import Action, ActionError, PermanentError, Selection
from pystol_worker.actions.registry import ActionRegistry, UnknownAction, default_registry

__all__ = ["Action", "ActionError", "ActionRegistry", "PermanentError", "Selection",
           "UnknownAction", "default_registry"]
