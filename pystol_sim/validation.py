"""Admission checks: the subset of apiserver validation that clients notice.

A real apiserver refuses a pod without containers or a custom resource that
breaks its CRD's schema with 422 Invalid and the field paths. Tests of Pystol's
own error handling need the same answers, so the sim checks names, the
essential fields of built-in kinds, and CRD `openAPIV3Schema` types, required
fields, enums and bounds. It is deliberately not a full OpenAPI validator.
"""

from __future__ import annotations

import re
from typing import Any

from pystol_sim.cron_schedule import ScheduleError, parse_schedule
from pystol_sim.errors import invalid
from pystol_sim.network_policy import policy_causes
from pystol_sim.resources import ResourceType

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAMED = ("/namespaces", "/services")
WORKLOADS = ("apps/deployments", "apps/replicasets", "apps/statefulsets", "apps/daemonsets")


def _name_causes(rtype: ResourceType, name: str) -> list[tuple[str, str]]:
    if not name:
        return []
    if rtype.key in LABEL_NAMED:
        if len(name) > 63 or not DNS_LABEL.match(name):
            return [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 label must '
                     "consist of lower case alphanumeric characters or '-', and must start and "
                     "end with an alphanumeric character")]
    elif rtype.schema is None and (len(name) > 253 or not DNS_SUBDOMAIN.match(name)):
        return [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                 "must consist of lower case alphanumeric characters, '-' or '.', and must start "
                 "and end with an alphanumeric character")]
    return []


def _containers(spec: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(spec, dict):
        return [(path, "Required value")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [(f"{path}.containers", "Required value")]
    causes = []
    for index, container in enumerate(containers):
        where = f"{path}.containers[{index}]"
        if not isinstance(container, dict):
            causes.append((where, "must be an object"))
            continue
        if not container.get("name"):
            causes.append((f"{where}.name", "Required value"))
        if not container.get("image"):
            causes.append((f"{where}.image", "Required value"))
    return causes


def _builtin_causes(rtype: ResourceType, obj: dict[str, Any]) -> list[tuple[str, str]]:
    spec = obj.get("spec")
    if rtype.key == "/pods":
        return _containers(spec, "spec")
    if rtype.key in WORKLOADS:
        if not isinstance(spec, dict):
            return [("spec", "Required value")]
        # Integers the controllers read: a string or a negative number here would fail
        # every reconcile of the object.
        causes = _counts(spec, "spec", ("replicas", "minReadySeconds", "revisionHistoryLimit"),
                         0)
        if rtype.key == "apps/deployments":
            causes += _counts(spec, "spec", ("progressDeadlineSeconds",), 1)
        selector = spec.get("selector")
        template = spec.get("template") or {}
        if not isinstance(selector, dict) or not (selector.get("matchLabels")
                                                  or selector.get("matchExpressions")):
            causes.append(("spec.selector", "Required value"))
        else:
            labels = (template.get("metadata") or {}).get("labels") or {}
            for key, value in (selector.get("matchLabels") or {}).items():
                if labels.get(key) != value:
                    causes.append(("spec.template.metadata.labels",
                                   "Invalid value: `selector` does not match template `labels`"))
                    break
        causes += _containers(template.get("spec"), "spec.template.spec")
        return causes
    if rtype.key == "apiextensions.k8s.io/customresourcedefinitions":
        if not isinstance(spec, dict):
            return [("spec", "Required value")]
        names = spec.get("names") or {}
        causes = [(f"spec.{f}", "Required value") for f in ("group",) if not spec.get(f)]
        causes += [(f"spec.names.{f}", "Required value") for f in ("plural", "kind")
                   if not names.get(f)]
        if not spec.get("versions"):
            causes.append(("spec.versions", "Required value"))
        expected = f"{names.get('plural')}.{spec.get('group')}"
        name = obj.get("metadata", {}).get("name")
        if name and name != expected:
            causes.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural'
                           f"+\".\"+spec.group ({expected})"))
        return causes
    if rtype.key == "networking.k8s.io/networkpolicies":
        return policy_causes(spec)
    if rtype.key == "batch/jobs":
        return _job_spec_causes(spec, "spec")
    if rtype.key == "batch/cronjobs":
        return _cronjob_causes(spec)
    return []


INT32_MAX = 2**31 - 1
# The sim's bound on a Job's pods (Kubernetes allows int32, but caps an Indexed Job's
# completions and parallelism at 10^5): more is a memory exhaustion, not a test.
MAX_JOB_PODS = 100_000


def _counts(spec: dict[str, Any], path: str, fields: tuple[str, ...], minimum: int,
            maximum: int = INT32_MAX) -> list[tuple[str, str]]:
    causes = []
    for field in fields:
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < minimum):
            causes.append((f"{path}.{field}", f"Invalid value: {value!r}: must be greater than "
                           f"or equal to {minimum}"))
        elif value is not None and value > maximum:
            causes.append((f"{path}.{field}", f"Invalid value: {value!r}: must be less than "
                           f"or equal to {maximum}"))
    return causes


def _job_spec_causes(spec: Any, path: str) -> list[tuple[str, str]]:
    """A Job's spec: pods that can finish (restartPolicy Never or OnFailure), sane counts."""
    if not isinstance(spec, dict):
        return [(path, "Required value")]
    causes = _counts(spec, path, ("completions", "parallelism", "backoffLimit"), 0,
                     MAX_JOB_PODS)
    causes += _counts(spec, path, ("ttlSecondsAfterFinished",), 0)
    causes += _counts(spec, path, ("activeDeadlineSeconds",), 1, 2**63 - 1)
    template = spec.get("template")
    pod_spec = template.get("spec") if isinstance(template, dict) else None
    causes += _containers(pod_spec, f"{path}.template.spec")
    if isinstance(pod_spec, dict):
        policy = pod_spec.get("restartPolicy")
        if policy not in ("OnFailure", "Never"):
            causes.append((f"{path}.template.spec.restartPolicy",
                           f'Unsupported value: "{policy}": supported values: "OnFailure", '
                           '"Never"' if policy else
                           'Required value: valid values: "OnFailure", "Never"'))
    return causes


def _cronjob_causes(spec: Any) -> list[tuple[str, str]]:
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    causes: list[tuple[str, str]] = []
    try:
        parse_schedule(str(spec.get("schedule") or ""), spec.get("timeZone"))
    except ScheduleError as error:
        field = "spec.timeZone" if "time zone" in str(error) else "spec.schedule"
        causes.append((field, str(error)))
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in ("Allow", "Forbid", "Replace"):
        causes.append(("spec.concurrencyPolicy", f'Unsupported value: "{policy}": supported '
                       'values: "Allow", "Forbid", "Replace"'))
    causes += _counts(spec, "spec", ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"),
                      0)
    causes += _counts(spec, "spec", ("startingDeadlineSeconds",), 0, 2**63 - 1)
    job_template = spec.get("jobTemplate")
    causes += _job_spec_causes(job_template.get("spec") if isinstance(job_template, dict)
                               else None, "spec.jobTemplate.spec")
    return causes


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float),
}


def schema_causes(schema: dict[str, Any], value: Any, path: str) -> list[tuple[str, str]]:
    """Check `value` against a structural (CRD) schema; returns (path, message) pairs."""
    if value is None:
        return [] if schema.get("nullable") or not schema.get("type") else [
            (path, f"Invalid value: \"null\": {path} in body must be of type {schema['type']}")]
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [(path, f"Invalid value: {value!r}: must be an integer or a string")]
        return []
    kind = schema.get("type")
    if kind:
        allowed = _TYPES.get(kind, (object,))
        bad = not isinstance(value, allowed) or (kind in ("integer", "number")
                                                  and isinstance(value, bool))
        if bad:
            return [(path, f'Invalid value: "{type(value).__name__}": {path} in body must be '
                     f"of type {kind}: {value!r}")]
    causes: list[tuple[str, str]] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed_values = ", ".join(f'"{v}"' for v in schema["enum"])
        causes.append((path, f"Unsupported value: {value!r}: supported values: {allowed_values}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            causes.append((path, f"Invalid value: {value}: {path} in body should be greater "
                           f"than or equal to {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            causes.append((path, f"Invalid value: {value}: {path} in body should be less than "
                           f"or equal to {schema['maximum']}"))
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append((path, f'Invalid value: "{value}": {path} in body should match '
                           f"'{schema['pattern']}'"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append((path, f"Too long: may not be longer than {schema['maxLength']}"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append((path, f"Invalid value: \"{value}\": {path} in body should be at least "
                           f"{schema['minLength']} chars long"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append((path, f"Too many: {len(value)}: must have at most "
                           f"{schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append((path, f"Invalid value: {path} in body should have at least "
                           f"{schema['minItems']} items"))
        item_schema = schema.get("items")
        if isinstance(item_schema, dict):
            for index, item in enumerate(value):
                causes += schema_causes(item_schema, item, f"{path}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for required in schema.get("required") or ():
            if required not in value:
                causes.append((f"{path}.{required}" if path else required, "Required value"))
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if key in properties:
                causes += schema_causes(properties[key], item, child)
            elif isinstance(extra, dict):
                causes += schema_causes(extra, item, child)
    return causes


def validate_object(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """Raise 422 Invalid when the object breaks a rule the apiserver would enforce."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    causes = _name_causes(rtype, meta.get("name") or "")
    labels = meta.get("labels")
    if labels is not None and (not isinstance(labels, dict) or not all(
            isinstance(v, str) for v in labels.values())):
        causes.append(("metadata.labels", "Invalid value: labels must be a map of strings"))
    if rtype.schema is not None:
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        schema = {k: v for k, v in rtype.schema.items() if k != "properties"}
        schema["properties"] = {k: v for k, v in (rtype.schema.get("properties") or {}).items()
                                if k not in ("apiVersion", "kind", "metadata")}
        causes += schema_causes(schema, body, "")
    else:
        causes += _builtin_causes(rtype, obj)
    if causes:
        raise invalid(rtype.kind, name, causes, rtype.group)
