"""Table cells for Jobs, CronJobs, ResourceQuotas, Ingresses and PriorityClasses, checked
against kubernetes' printers.go (printJob, printCronJob, printResourceQuota, printIngress,
printPriorityClass)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pystol_sim.resources import BUILTIN_TYPES
from pystol_sim.tables import render_table

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ago(**kwargs: float) -> str:
    return (NOW - timedelta(**kwargs)).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(plural: str, obj: dict[str, Any]) -> tuple[list[str], list[Any]]:
    rtype = next(t for t in BUILTIN_TYPES if t.plural == plural)
    result = render_table(rtype, [obj], {"resourceVersion": "7"}, now=NOW)
    return [c["name"] for c in result["columnDefinitions"]], result["rows"][0]["cells"]


def test_job_status_completions_and_duration() -> None:
    job = {"metadata": {"name": "pi", "creationTimestamp": ago(minutes=5)},
           "spec": {"completions": 3, "selector": {"matchLabels": {"job-name": "pi"}},
                    "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
           "status": {"succeeded": 3, "startTime": ago(minutes=5),
                      "completionTime": ago(minutes=3, seconds=58),
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    columns, cells = table("jobs", job)
    assert columns == ["Name", "Status", "Completions", "Duration", "Age", "Containers",
                       "Images", "Selector"]
    assert cells == ["pi", "Complete", "3/3", "62s", "5m", "pi", "perl", "job-name=pi"]

    running = {"metadata": {"name": "q", "creationTimestamp": ago(seconds=30)},
               "spec": {"parallelism": 4}, "status": {"startTime": ago(seconds=20)}}
    assert table("jobs", running)[1][1:4] == ["Running", "0/1 of 4", "20s"]
    failed = {"metadata": {"name": "f"}, "spec": {"completions": 1},
              "status": {"failed": 7, "conditions": [
                  {"type": "FailureTarget", "status": "True"},
                  {"type": "Failed", "status": "True"}]}}
    assert table("jobs", failed)[1][1:4] == ["Failed", "0/1", ""]


def test_cronjob_schedule_suspend_active_and_last_schedule() -> None:
    cron = {"metadata": {"name": "tick", "creationTimestamp": ago(hours=2)},
            "spec": {"schedule": "*/5 * * * *", "timeZone": "Europe/Madrid",
                     "jobTemplate": {"spec": {"template": {"spec": {
                         "containers": [{"name": "t", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "tick-1"}], "lastScheduleTime": ago(minutes=4)}}
    columns, cells = table("cronjobs", cron)
    assert columns[:7] == ["Name", "Schedule", "Timezone", "Suspend", "Active",
                           "Last Schedule", "Age"]
    assert cells[:7] == ["tick", "*/5 * * * *", "Europe/Madrid", "False", 1, "4m", "120m"]
    never = {"metadata": {"name": "n"}, "spec": {"schedule": "@daily", "suspend": True}}
    assert table("cronjobs", never)[1][2:6] == ["<none>", "True", 0, "<none>"]


def test_resourcequota_request_and_limit_columns() -> None:
    quota = {"metadata": {"name": "q", "creationTimestamp": ago(minutes=1)},
             "spec": {"hard": {"pods": "10", "limits.cpu": "4", "requests.memory": "1Gi"}},
             "status": {"hard": {"pods": "10", "limits.cpu": "4", "requests.memory": "1Gi"},
                        "used": {"pods": "3", "requests.memory": "512Mi"}}}
    columns, cells = table("resourcequotas", quota)
    assert columns == ["Name", "Age", "Request", "Limit"]
    assert cells == ["q", "60s", "pods: 3/10, requests.memory: 512Mi/1Gi", "limits.cpu: 0/4"]


def test_ingress_class_hosts_address_and_ports() -> None:
    ingress = {"metadata": {"name": "web", "creationTimestamp": ago(seconds=5)},
               "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example"]}],
                        "rules": [{"host": h} for h in ("a.example", "b.example", "c.example",
                                                        "d.example", "e.example")]},
               "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}]}}}
    columns, cells = table("ingresses", ingress)
    assert columns == ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
    assert cells == ["web", "nginx", "a.example,b.example,c.example + 2 more...", "10.0.0.9",
                     "80, 443", "5s"]
    bare = {"metadata": {"name": "any"}, "spec": {"rules": [{}]}}
    assert table("ingresses", bare)[1][1:5] == ["<none>", "*", "", "80"]


def test_priorityclass_value_default_and_preemption() -> None:
    pc = {"metadata": {"name": "high", "creationTimestamp": ago(days=3)}, "value": 1000,
          "globalDefault": True}
    columns, cells = table("priorityclasses", pc)
    assert columns == ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
    assert cells == ["high", 1000, True, "3d", "PreemptLowerPriority"]
