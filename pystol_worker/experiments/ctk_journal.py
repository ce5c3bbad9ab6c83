"""Chaos Toolkit journals of Pystol runs, and the verdict a journal says.

`pystol jobs show ID --journal` and `GET …/journal` write what `chaos run --journal-path`
would have written for the same run, so the tools people already feed journals to
(reports, dashboards, CI checks on `deviated`) read Pystol's runs too. The top-level keys
are exactly chaoslib 1.44.0's (ANCHORS, Chaos Toolkit §4); what only Pystol knows (run
id, verdict, score, the step jobs) goes where Chaos Toolkit puts extra data: an
`extensions` entry named `pystol` inside `experiment`.

`ctk_verdict` reads a journal — one from `chaos run` or one rendered here — as a Pystol
verdict (design §5). The two are inverse on Pystol's runs (`ctk_verdict(render(r)) ==
r.verdict`, a property test), which is what lets the same experiment file be judged the
same under `chaos run` and under Pystol:

- `status` aborted or interrupted → aborted;
- the before hypothesis not met → skipped (Chaos Toolkit runs no method then);
- `deviated` (after hypothesis not met) → failed, or deviated when a state recorded
  during the method was not met (Chaos Toolkit's own `during` states come from its
  continuous hypothesis strategy; Pystol puts the probes that failed while a fault was
  held there);
- `status` failed (a probe raised) → failed;
- otherwise passed.

Pure: the caller gives the record, nothing is read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pystol_worker.core.experiment_model import (
    ExperimentRun,
    ExperimentSpec,
    ExperimentStatus,
    StepRun,
    StepStatus,
)
from pystol_worker.core.model import JobRecord, JobStatus, ProbeOutcome, Verdict
from pystol_worker.experiments.ctk_import import CHAOSLIB_VERSION

JOURNAL_KEYS = ("chaoslib-version", "platform", "node", "experiment", "start", "end",
                "duration", "status", "deviated", "steady_states", "run", "rollbacks")
PLATFORM = "pystol"
_NOT_ACTIVITIES = ("serial", "parallel", "wait", "suspend")


def ctk_verdict(journal: Mapping[str, Any]) -> Verdict:
    """The Pystol verdict a Chaos Toolkit journal says (module docstring)."""
    status = journal.get("status")
    if status in ("aborted", "interrupted"):
        return Verdict.ABORTED
    states = journal.get("steady_states") or {}
    before = states.get("before")
    if isinstance(before, Mapping) and before.get("steady_state_met") is False:
        return Verdict.SKIPPED
    if journal.get("deviated"):
        during = states.get("during") or []
        if any(isinstance(state, Mapping) and state.get("steady_state_met") is False
               for state in during):
            return Verdict.DEVIATED
        return Verdict.FAILED
    if status == "failed":
        return Verdict.FAILED
    return Verdict.PASSED


def render(run: ExperimentRun | JobRecord) -> dict[str, Any]:
    """The Chaos Toolkit journal of an experiment run or of a single job."""
    if isinstance(run, JobRecord):
        return _render_job(run)
    return _render_run(run)


# -- pieces ----------------------------------------------------------------------------------

def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _status(verdict: Verdict | None, interrupted: bool, probe_raised: bool) -> str | None:
    """chaoslib's run status: completed, failed (a hypothesis probe raised), aborted, or
    interrupted (cancel, halt: Pystol's Ctrl-C)."""
    if verdict is None:
        return None
    if verdict == Verdict.ABORTED:
        return "interrupted" if interrupted else "aborted"
    if probe_raised and verdict in (Verdict.SKIPPED, Verdict.FAILED):
        return "failed"
    return "completed"


def _probe_run(outcome: ProbeOutcome) -> dict[str, Any]:
    """One probe evaluation as chaoslib's activity run: `status` says whether the probe
    ran (failed = it raised, here: it could not get an answer), `tolerance_met` whether
    its answer was the expected one."""
    entry: dict[str, Any] = {
        "activity": {"type": "probe", "name": outcome.name or outcome.probe.name,
                     "provider": {"type": "pystol", "probe": outcome.probe.model_dump(
                         mode="json", exclude_defaults=True)},
                     "tolerance": True},
        "output": _probe_output(outcome),
        "start": _time(outcome.started_at),
        "end": _time(outcome.ended_at),
        "duration": outcome.duration_seconds,
        "status": "failed" if _probe_raised(outcome) else "succeeded",
        "tolerance_met": outcome.ok,
    }
    if _probe_raised(outcome):
        entry["exception"] = [str(outcome.error)]
    elif outcome.error:
        entry["pystol_reason"] = outcome.error
    return entry


def _probe_output(outcome: ProbeOutcome) -> Any:
    if outcome.status is not None:
        return {"status": outcome.status, "value": outcome.value, "text": outcome.output}
    return outcome.value if outcome.value is not None else outcome.output


def _state(outcomes: list[ProbeOutcome], met: bool) -> dict[str, Any]:
    return {"steady_state_met": met, "probes": [_probe_run(o) for o in outcomes]}


def _probe_raised(outcome: ProbeOutcome) -> bool:
    """Whether the probe got no answer at all (chaoslib: the probe raised). A probe that
    got an answer outside its tolerance (a 503, a count of 2) ran fine: its `error` says
    why the answer was wrong, and it is `tolerance_met: false`, as in chaoslib."""
    return bool(outcome.error) and outcome.status is None and outcome.value is None


def _raised(outcomes: Iterable[ProbeOutcome]) -> bool:
    return any(_probe_raised(outcome) for outcome in outcomes)


def _steady_states(verdict: Verdict | None, before: list[ProbeOutcome] | None,
                   after: list[ProbeOutcome] | None, during: list[ProbeOutcome],
                   reason: str | None) -> dict[str, Any]:
    """before/after are None when that check did not run. The verdict leads: skipped
    means the before check (or the guard) said no; failed means the after check did."""
    before_state = None
    if before is not None or verdict == Verdict.SKIPPED:
        before_state = _state(before or [], met=verdict != Verdict.SKIPPED)
        if verdict == Verdict.SKIPPED and reason:
            before_state["pystol_reason"] = reason
    after_state = None
    if after is not None or verdict == Verdict.FAILED:
        met = all(o.ok for o in after or []) and verdict != Verdict.FAILED
        after_state = _state(after or [], met=met)
    during_states: list[dict[str, Any]] = []
    if during:
        during_states.append(_state(during, met=all(o.ok for o in during)))
    if verdict == Verdict.DEVIATED and not any(not s["steady_state_met"]
                                               for s in during_states):
        during_states.append({"steady_state_met": False, "probes": [],
                              "pystol_reason": reason or "deviated while a fault was held"})
    return {"before": before_state, "after": after_state, "during": during_states}


def _extension(kind: str, ident: str, verdict: Verdict | None, score: float | None,
               reason: str | None, jobs: list[str]) -> dict[str, Any]:
    return {"name": "pystol", "kind": kind, "id": ident,
            "verdict": verdict.value if verdict else None, "score": score,
            "reason": reason, "jobs": jobs, "journal_follows_chaoslib": CHAOSLIB_VERSION}


def _journal(**parts: Any) -> dict[str, Any]:
    return {key: parts[key.replace("-", "_")] for key in JOURNAL_KEYS}


# -- an experiment run -----------------------------------------------------------------------

def _experiment_document(spec: ExperimentSpec) -> dict[str, Any]:
    """The experiment as the journal shows it: the imported Chaos Toolkit document when
    there is one (secrets already redacted by the import), else the Pystol spec in Chaos
    Toolkit's top-level shape."""
    if spec.source_document is not None:
        document = dict(spec.source_document)
    else:
        document = {"description": spec.description, "tags": list(spec.tags),
                    "pystol": spec.model_dump(mode="json", exclude_defaults=True)}
    document["title"] = spec.title or spec.name
    document["dry"] = spec.dry_run or None
    return document


def _ctk_activities(spec: ExperimentSpec, key: str) -> list[dict[str, Any]]:
    """The imported document's method or rollbacks, `{"ref": name}` resolved as chaoslib
    resolves it for its journal. The import maps each of them to exactly one step (plus
    `wait` steps for pauses), in order, or refuses the file; so they line up with the
    steps that are not waits."""
    document = spec.source_document or {}
    named: dict[str, dict[str, Any]] = {}
    hypothesis = document.get("steady-state-hypothesis")
    probes = hypothesis.get("probes") if isinstance(hypothesis, dict) else None
    found: list[dict[str, Any]] = []
    for activity in [*(probes if isinstance(probes, list) else []),
                     *(document.get("method") or []), *(document.get("rollbacks") or [])]:
        if isinstance(activity, dict) and isinstance(activity.get("name"), str):
            named.setdefault(activity["name"], activity)
    for activity in document.get(key) or []:
        if isinstance(activity, dict) and isinstance(activity.get("ref"), str):
            activity = named.get(activity["ref"], activity)
        found.append(activity if isinstance(activity, dict) else {})
    return found


def _step_run(step: StepRun, activity: dict[str, Any] | None = None) -> dict[str, Any]:
    activity_type = "probe" if step.type == "probe" else "action"
    pystol = {"type": "pystol", "step": step.path, "job": step.job_id}
    entry: dict[str, Any] = {
        "activity": activity if activity is not None else {
            "type": activity_type, "name": step.name, "provider": pystol},
        "output": {**step.output, "probes": [_probe_run(o) for o in step.probes]}
        if step.probes else (step.output or None),
        "start": _time(step.started_at),
        "end": _time(step.ended_at),
        "duration": step.duration_seconds,
        "status": "succeeded" if step.status == StepStatus.SUCCEEDED else "failed",
    }
    if step.status != StepStatus.SUCCEEDED:
        entry["exception"] = [step.error or f"step {step.path} {step.status.value}"]
    if activity is not None:
        entry["pystol"] = pystol
    return entry


def _activity_runs(steps: list[StepRun], spec: ExperimentSpec, key: str
                   ) -> list[dict[str, Any]]:
    """Run records of the steps that are activities, each with its Chaos Toolkit activity
    when the experiment was imported from one."""
    shown = [step for step in steps if step.path not in ("before", "after")
             and step.type not in _NOT_ACTIVITIES
             and step.status not in (StepStatus.PENDING, StepStatus.SKIPPED)]  # never ran
    originals: list[dict[str, Any] | None] = []
    if spec.source_format == "chaostoolkit" and spec.source_document is not None:
        top = [step for step in steps if _top_level(step.path, key)
               and step.type not in _NOT_ACTIVITIES]
        by_path = dict(zip([step.path for step in top], _ctk_activities(spec, key),
                           strict=False))
        originals = [by_path.get(step.path) for step in shown]
    else:
        originals = [None] * len(shown)
    return [_step_run(step, activity) for step, activity in zip(shown, originals,
                                                                strict=True)]


def _top_level(path: str, key: str) -> bool:
    return path.startswith(f"{key}[") and path.endswith("]") and "." not in path


def _render_run(run: ExperimentRun) -> dict[str, Any]:
    checks = {step.path: step for step in run.steps if step.path in ("before", "after")}
    before = checks["before"].probes if "before" in checks else None
    after = checks["after"].probes if "after" in checks else None
    during = [outcome for step in run.steps if step.path not in ("before", "after")
              for outcome in step.probes if outcome.phase == "during"
              and outcome.origin != "step"]
    experiment = _experiment_document(run.spec)
    jobs = [step.job_id for step in [*run.steps, *run.rollbacks] if step.job_id]
    extensions = list(experiment.get("extensions") or [])
    extensions.append(_extension("experiment-run", run.id, run.verdict, run.score,
                                 run.reason, jobs))
    experiment["extensions"] = extensions
    interrupted = run.status == ExperimentStatus.CANCELLED or "halt" in (run.reason or "")
    probe_raised = _raised([*(before or []), *(after or [])])
    return _journal(
        chaoslib_version=CHAOSLIB_VERSION, platform=PLATFORM, node=PLATFORM,
        experiment=experiment, start=_time(run.started_at or run.created_at),
        end=_time(run.ended_at), duration=run.duration_seconds,
        status=_status(run.verdict, interrupted, probe_raised),
        deviated=run.verdict in (Verdict.FAILED, Verdict.DEVIATED),
        steady_states=_steady_states(run.verdict, before, after, during, run.reason),
        run=_activity_runs(run.steps, run.spec, "method"),
        rollbacks=_activity_runs(run.rollbacks, run.spec, "rollbacks"))


# -- a single job ----------------------------------------------------------------------------

def _render_job(job: JobRecord) -> dict[str, Any]:
    outcomes = job.result.probes
    by_phase: dict[str, list[ProbeOutcome]] = {"before": [], "during": [], "after": []}
    for outcome in outcomes:
        if outcome.origin != "guard":
            by_phase[outcome.phase].append(outcome)
    guard = [o for o in outcomes if o.origin == "guard"]
    before = [*guard, *by_phase["before"]] or None
    after = by_phase["after"] or None
    spec = job.spec
    activity: dict[str, Any] = {
        "activity": {"type": "action", "name": spec.action,
                     "provider": {"type": "pystol", "action": spec.action,
                                  "job": job.id}},
        "output": {"targets": [ref.model_dump(mode="json", exclude_none=True)
                               for ref in job.targets], **job.result.output},
        "start": _time(job.started_at),
        "end": _time(job.ended_at),
        "duration": job.duration_seconds,
        "status": "succeeded" if job.status == JobStatus.SUCCEEDED else "failed",
    }
    if job.status != JobStatus.SUCCEEDED:
        activity["exception"] = [job.error or job.reason or f"job {job.status.value}"]
    ran = job.status not in (JobStatus.SKIPPED, JobStatus.QUEUED) and job.started_at
    experiment: dict[str, Any] = {
        "title": f"{spec.action} ({job.id})",
        "description": job.reason or "",
        "method": [activity["activity"]],
        "dry": spec.dry_run or None,
        "extensions": [_extension("job", job.id, job.verdict, job.score, job.reason,
                                  [job.id])],
    }
    interrupted = job.status == JobStatus.CANCELLED or "halt" in (job.reason or "")
    return _journal(
        chaoslib_version=CHAOSLIB_VERSION, platform=PLATFORM, node=job.worker or PLATFORM,
        experiment=experiment, start=_time(job.started_at or job.created_at),
        end=_time(job.ended_at), duration=job.duration_seconds,
        status=_status(job.verdict, interrupted, _raised([*(before or []),
                                                          *(after or [])])),
        deviated=job.verdict in (Verdict.FAILED, Verdict.DEVIATED),
        steady_states=_steady_states(job.verdict, before, after, by_phase["during"],
                                     job.reason),
        run=[activity] if ran and job.verdict != Verdict.SKIPPED else [],
        rollbacks=[])


__all__ = ["JOURNAL_KEYS", "ctk_verdict", "render"]
