"""Every example document in the README's chapters on probes, experiments, Chaos Toolkit
compatibility and rehearsal is accepted by the models it claims to be for.

A reader copies these blocks; one that the API would refuse is a bug in the README (or
in the models). Each JSON or YAML block is classified by its keys and validated with the
code the API, the CLI and the worker use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pystol_api.watcher.experiment_mapping import experiment_spec_from_cr
from pystol_worker.core.experiment_model import ExperimentSpec
from pystol_worker.core.model import JobSpec
from pystol_worker.core.policy import Policy
from pystol_worker.core.schedule_model import ScheduleSpec
from pystol_worker.experiments.ctk_import import import_experiment, is_chaostoolkit

README = Path(__file__).resolve().parents[2] / "README.md"
CHAPTERS = ("## Probes and the steady state", "## Experiments", "## Chaos Toolkit compatibility",
            "## Rehearse before you break production", "### PystolExperiment")
BLOCK = re.compile(r"^```(json|yaml)\n(.*?)^```", re.S | re.M)


def chapter_text() -> str:
    text = README.read_text(encoding="utf-8")
    found = []
    for title in CHAPTERS:
        start = text.find("\n" + title + "\n")
        if start < 0:
            continue
        end = text.find("\n" + title.split(" ")[0] + " ", start + len(title) + 2)
        found.append(text[start:end if end > 0 else None])
    return "\n".join(found)


def documents() -> list[tuple[int, Any]]:
    found = []
    for index, match in enumerate(BLOCK.finditer(chapter_text())):
        language, body = match.groups()
        body = "\n".join(line for line in body.splitlines()
                         if not line.lstrip().startswith("# POST"))
        data = json.loads(body) if language == "json" else yaml.safe_load(body)
        found.append((index, data))
    return found


def kind_of(data: Any) -> str:
    if not isinstance(data, dict):
        return "other"
    if is_chaostoolkit(data):
        return "chaostoolkit"
    if data.get("kind") in ("PystolExperiment", "PystolClusterExperiment", "List"):
        return "custom-resource"
    if "method" in data:
        return "experiment"
    if "action" in data:
        return "job"
    if "cron" in data or "interval" in data:
        return "schedule"
    if set(data) & {"prometheus", "probes", "actions"} and "action" not in data:
        return "policy"
    return "other"


def test_the_chapters_have_examples_of_every_kind() -> None:
    kinds = {kind_of(data) for _, data in documents()}
    assert {"experiment", "job", "chaostoolkit", "policy", "schedule",
            "custom-resource"} <= kinds, kinds


@pytest.mark.parametrize(("index", "data"), documents())
def test_each_example_is_accepted(index: int, data: Any) -> None:
    kind = kind_of(data)
    if kind == "custom-resource":
        experiment_spec_from_cr(data["spec"], data["metadata"]["name"])
    elif kind == "chaostoolkit":
        import_experiment(data, environ={"K8S_API": "https://10.0.0.1:6443"})
    elif kind == "experiment":
        ExperimentSpec.model_validate(data)
    elif kind == "job":
        JobSpec.model_validate(data)
    elif kind == "policy":
        Policy.model_validate(data)
    elif kind == "schedule":
        ScheduleSpec.model_validate({key: value for key, value in data.items() if key != "id"})
