"""http-probe's `service` form: what a job may name, before anything reaches the cluster."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pystol_worker.actions.http_probe import HttpProbeParams, service_name_port


def params(**service: object) -> HttpProbeParams:
    return HttpProbeParams.model_validate(
        {"service": {"namespace": "shop", "name": "web", **service}})


def test_a_service_with_a_port_and_path_is_accepted() -> None:
    probe = params(port="http", path="/healthz?deep=1")
    assert probe.service is not None and service_name_port(probe.service) == "web:http"
    assert probe.target_text == "service shop/web:http/healthz?deep=1"


@pytest.mark.parametrize("path", [
    "/../../../api/v1/namespaces/payments/secrets",
    "/a/%2e%2e/%2E%2E/secrets",
    "/%252e%252e/%252e%252e/secrets",
    "/ok/..\\\\..\\\\secrets",
    "/./x",
])
def test_a_path_cannot_climb_out_of_the_service_proxy(path: str) -> None:
    """The worker's credentials read through the proxy: `..` would reach other API paths."""
    with pytest.raises(ValidationError, match=r"'\.\.' segments are not allowed"):
        params(path=path)


def test_dots_inside_a_segment_are_fine() -> None:
    assert params(path="/v1.2/file..txt").service is not None


@pytest.mark.parametrize("body, field", [
    ({"service": {"namespace": "shop", "name": "web"}, "url": "http://x.example/"},
     "exactly one of params.url"),
    ({}, "exactly one of params.url"),
    ({"service": {"namespace": "shop", "name": "web", "port": 70000}}, "1..65535"),
    ({"service": {"namespace": "shop", "name": "web", "port": "HTTP"}}, "port name"),
    ({"service": {"namespace": "Shop!", "name": "web"}}, "namespace"),
    ({"service": {"namespace": "shop", "name": "web"}, "follow_redirects": True},
     "follow_redirects applies to params.url only"),
])
def test_bad_service_params_are_refused_naming_the_problem(body: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        HttpProbeParams.model_validate(body)
