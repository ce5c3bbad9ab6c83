"""Every timeline event kind the code emits is an `EventKind`.

`TimelineEvent.kind` is an `EventKind`, so an event of a kind missing from the enum would
fail when the job appends it. This test reads the source (the AST, not a grep) for every
call that emits an event: `.event(kind, ...)` (the run context), `.append_event(job_id,
kind, ...)` (the job store), `.update_record(change, kind, ...)` (the run context, a record
change with its event) and `TimelineEvent(kind=...)`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pystol_worker.core.model import EventKind, JobStatus, TimelineEvent, utcnow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pystol_worker", "pystol_api")

# Calls whose kind is neither a string literal nor an EventKind: each one passes on a kind
# that was checked where it came from.
PASS_THROUGH = {
    ("pystol_worker/safety/job_context.py", "kind"),  # forwards ctx.event's kind
    ("pystol_worker/store/job_store.py", "kind"),  # append_event: a plug-in's kind is kept
    ("pystol_worker/experiments/store.py", "kind"),  # a run's append_event: callers pass members
}


def emitted_kinds() -> list[tuple[str, int, ast.expr]]:
    """(file, line, kind expression) of every event emitted in the packages."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            where = path.relative_to(ROOT).as_posix()
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                kind = kind_argument(node)
                if kind is not None:
                    found.append((where, node.lineno, kind))
    return found


def kind_argument(call: ast.Call) -> ast.expr | None:
    """The kind argument of an event-emitting call, None for any other call."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "event":
        if isinstance(func.value, ast.Name) and func.value.id == "kopf":
            return None  # kopf.event posts a Kubernetes Event, not a timeline event
        position = 0
    elif isinstance(func, ast.Attribute) and func.attr in ("append_event", "update_record"):
        position = 1  # append_event(job_id, kind, ...), update_record(change, kind, ...)
    elif isinstance(func, ast.Name) and func.id == "TimelineEvent":
        position = -1
    else:
        return None
    for keyword in call.keywords:
        if keyword.arg == "kind":
            return keyword.value
    if 0 <= position < len(call.args):
        return call.args[position]
    return None


def is_event_kind(expression: ast.expr) -> bool:
    """`EventKind.X` or `EventKind(...)`: typed, checked by Python itself."""
    if isinstance(expression, ast.Attribute):
        return isinstance(expression.value, ast.Name) and expression.value.id == "EventKind"
    if isinstance(expression, ast.Call):
        return isinstance(expression.func, ast.Name) and expression.func.id == "EventKind"
    return False


def test_the_scan_finds_the_known_emitters() -> None:
    named = set()
    for _, _, kind in emitted_kinds():
        if isinstance(kind, ast.Constant):
            named.add(kind.value)
        elif isinstance(kind, ast.Attribute) and is_event_kind(kind):
            named.add(EventKind[kind.attr].value)
    # the store, the runner, the faults and the CR watcher
    assert {"queued", "started", "selected", "injected", "reverted",
            "custom-resource"} <= named, named


def test_every_emitted_kind_is_an_event_kind() -> None:
    members = {kind.value for kind in EventKind}
    problems = []
    for where, line, kind in emitted_kinds():
        if isinstance(kind, ast.Constant):
            if kind.value not in members:
                problems.append(f"{where}:{line}: {kind.value!r} is not an EventKind")
        elif not is_event_kind(kind) and (where, ast.unparse(kind)) not in PASS_THROUGH:
            problems.append(f"{where}:{line}: kind {ast.unparse(kind)} is neither a literal "
                            "nor an EventKind")
    assert not problems, "\n".join(problems)


def test_every_terminal_job_status_is_an_event_kind() -> None:
    # JobStore.finish appends an event named after the terminal status
    for status in JobStatus:
        if status.terminal:
            assert EventKind(status.value) == status.value


def test_timeline_event_kind_is_checked() -> None:
    event = TimelineEvent(at=utcnow(), kind="injected", message="deleted pod shop/web-1")
    assert event.kind is EventKind.INJECTED
    assert event.model_dump(mode="json")["kind"] == "injected"
    assert f"{event.kind}" == "injected"  # the SSE stream writes `event: {kind}`
    # A plug-in's own kind is kept as its string: a stored timeline with one still loads.
    custom = TimelineEvent.model_validate_json(
        TimelineEvent(at=utcnow(), kind="annotated", message="").model_dump_json())
    assert custom.kind == "annotated" and not isinstance(custom.kind, EventKind)
