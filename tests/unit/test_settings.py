"""pystol_worker.core.settings: DESIGN.md defaults, comma lists, errors naming variables."""

from __future__ import annotations

import os

import pytest

from pystol_worker.core.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without any PYSTOL_ variable."""
    for name in list(os.environ):
        if name.upper().startswith("PYSTOL_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_design_table() -> None:
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.kubeconfig == ""
    assert settings.api_bind == "127.0.0.1:8080"
    assert settings.api_tokens == []
    assert settings.protected_namespaces == ["kube-system", "kube-public", "kube-node-lease"]
    assert settings.kube_qps == 20
    assert settings.kube_burst == 40
    assert settings.api_url == "http://127.0.0.1:8080"
    assert settings.token == ""
    assert settings.allow_protected is False


def test_bind_host_and_port() -> None:
    settings = load_settings()
    assert (settings.bind_host, settings.bind_port) == ("127.0.0.1", 8080)


def test_ipv6_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_API_BIND", "[::1]:9090")
    settings = load_settings()
    assert (settings.bind_host, settings.bind_port) == ("::1", 9090)


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_REDIS_URL", "redis://redis.pystol:6379/3")
    monkeypatch.setenv("PYSTOL_KUBE_QPS", "7.5")
    monkeypatch.setenv("PYSTOL_KUBE_BURST", "15")
    monkeypatch.setenv("PYSTOL_API_BIND", "0.0.0.0:80")
    monkeypatch.setenv("PYSTOL_API_URL", "https://pystol.example.com/")
    monkeypatch.setenv("PYSTOL_KUBECONFIG", "/etc/kube/config")
    settings = load_settings()
    assert settings.redis_url == "redis://redis.pystol:6379/3"
    assert settings.kube_qps == 7.5
    assert settings.kube_burst == 15
    assert settings.bind_port == 80
    assert settings.api_url == "https://pystol.example.com"  # trailing slash dropped
    assert settings.kubeconfig == "/etc/kube/config"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a,b,c", ["a", "b", "c"]),
        (" a , b ,c ", ["a", "b", "c"]),
        ("a,,b,", ["a", "b"]),
        ("solo", ["solo"]),
        ("", []),
    ],
)
def test_comma_lists(monkeypatch: pytest.MonkeyPatch, given: str, expected: list[str]) -> None:
    monkeypatch.setenv("PYSTOL_PROTECTED_NAMESPACES", given)
    monkeypatch.setenv("PYSTOL_API_TOKENS", given)
    settings = load_settings()
    assert settings.protected_namespaces == expected
    assert settings.api_tokens == expected


def test_protected_namespaces_replace_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_PROTECTED_NAMESPACES", "payments,pystol")
    settings = load_settings()
    assert settings.is_protected("payments")
    assert settings.is_protected("pystol")
    assert not settings.is_protected("kube-system")
    assert not settings.is_protected("shop")


def test_allow_protected_lifts_the_protection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().is_protected("kube-system")
    monkeypatch.setenv("PYSTOL_ALLOW_PROTECTED", "true")
    assert not load_settings().is_protected("kube-system")


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_KUBE_QPS", "5")
    assert load_settings(kube_qps=9).kube_qps == 9


@pytest.mark.parametrize(
    ("variable", "value", "hint"),
    [
        ("PYSTOL_KUBE_QPS", "fast", "valid number"),
        ("PYSTOL_KUBE_QPS", "0", "greater than 0"),
        ("PYSTOL_KUBE_QPS", "-3", "greater than 0"),
        ("PYSTOL_KUBE_BURST", "0", "greater than or equal to 1"),
        ("PYSTOL_KUBE_BURST", "many", "valid integer"),
        ("PYSTOL_API_BIND", "8080", "HOST:PORT"),
        ("PYSTOL_API_BIND", "localhost", "HOST:PORT"),
        ("PYSTOL_API_BIND", "127.0.0.1:0", "HOST:PORT"),
        ("PYSTOL_API_BIND", "127.0.0.1:70000", "HOST:PORT"),
        ("PYSTOL_API_BIND", "http://127.0.0.1:8080", "HOST:PORT"),
        ("PYSTOL_REDIS_URL", "http://127.0.0.1:6379", "redis://"),
        ("PYSTOL_REDIS_URL", "127.0.0.1:6379", "redis://"),
        ("PYSTOL_API_URL", "127.0.0.1:8080", "http://"),
        ("PYSTOL_ALLOW_PROTECTED", "perhaps", "valid boolean"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                        value: str, hint: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    line = next(line for line in message.splitlines() if variable in line)
    assert hint in line
    assert repr(value) in line  # the offending value is shown


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_KUBE_QPS", "fast")
    monkeypatch.setenv("PYSTOL_API_BIND", "nowhere")
    monkeypatch.setenv("PYSTOL_REDIS_URL", "mysql://db")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for variable in ("PYSTOL_KUBE_QPS", "PYSTOL_API_BIND", "PYSTOL_REDIS_URL"):
        assert variable in message
    assert "PYSTOL_KUBE_BURST" not in message


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("pystol_kube_burst", "11")
    assert Settings().kube_burst == 11


@pytest.mark.parametrize(("given", "seconds"), [("30d", 30 * 86400), ("12h", 43200),
                                                ("90m", 5400), ("3600", 3600)])
def test_job_retention_takes_a_duration(monkeypatch: pytest.MonkeyPatch, given: str,
                                        seconds: float) -> None:
    monkeypatch.setenv("PYSTOL_JOB_RETENTION", given)
    assert load_settings().job_retention_seconds == seconds


def test_a_bad_job_retention_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_JOB_RETENTION", "3x")
    with pytest.raises(SettingsError, match=r"^invalid configuration:\n  PYSTOL_JOB_RETENTION:"):
        load_settings()


def test_a_bad_redis_url_is_reported_without_its_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_REDIS_URL", "http://:hunter2-secret@redis:6379/0")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "PYSTOL_REDIS_URL" in str(raised.value) and "hunter2" not in str(raised.value)


def test_a_bad_signing_key_is_reported_without_its_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_SIGNING_KEY", "short-secret")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "PYSTOL_SIGNING_KEY" in str(raised.value) and "short-secret" not in str(raised.value)
