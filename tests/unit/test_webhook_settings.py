"""WebhookSettings.from_env: off without a port, every malformed key named, the names the certificate carries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from credward.webhook.settings import WebhookSettings, WebhookSettingsError


def test_off_without_a_port() -> None:
    assert WebhookSettings.from_env({}) is None


def test_defaults_serve_a_service_in_the_pod_namespace() -> None:
    settings = WebhookSettings.from_env({"CREDWARD_WEBHOOK_PORT": "9443", "POD_NAMESPACE": "ops"})
    assert settings is not None
    assert (settings.port, settings.namespace, settings.url) == (9443, "ops", None)
    assert settings.never_admitted_namespaces == ("ops", "kube-system")
    policy = settings.tls_policy
    assert policy.dns_names == (
        "credward-webhook",
        "credward-webhook.ops",
        "credward-webhook.ops.svc",
        "credward-webhook.ops.svc.cluster.local",
    )
    assert policy.ip_addresses == ()
    assert settings.injection.security_base_url == "http://credward-security:9000"


def test_a_url_puts_its_host_in_the_certificate_and_flags_win() -> None:
    env = {"CREDWARD_WEBHOOK_PORT": "1", "CREDWARD_WEBHOOK_URL": "https://127.0.0.1:8443/"}
    settings = WebhookSettings.from_env(env, port=8443, security_base_url="http://sec.example:9000/")
    assert settings is not None
    assert settings.port == 8443
    assert settings.url == "https://127.0.0.1:8443"
    assert settings.tls_policy.ip_addresses == ("127.0.0.1",)
    assert settings.security_base_url == "http://sec.example:9000"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CREDWARD_WEBHOOK_PORT": "http"}, "CREDWARD_WEBHOOK_PORT"),
        ({"CREDWARD_WEBHOOK_PORT": "70000"}, "CREDWARD_WEBHOOK_PORT"),
        ({"CREDWARD_WEBHOOK_URL": "http://127.0.0.1:1"}, "CREDWARD_WEBHOOK_URL"),
        ({"CREDWARD_WEBHOOK_CA_VALIDITY": "a year"}, "CREDWARD_WEBHOOK_CA_VALIDITY"),
        ({"CREDWARD_WEBHOOK_TIMEOUT_SECONDS": "31"}, "CREDWARD_WEBHOOK_TIMEOUT_SECONDS"),
        ({"CREDWARD_WEBHOOK_OVERLAP": "30s", "CREDWARD_WEBHOOK_SYNC_INTERVAL": "30s"}, "CREDWARD_WEBHOOK_OVERLAP"),
        ({"CREDWARD_WEBHOOK_CERT_VALIDITY": "10m"}, "CREDWARD_WEBHOOK_CERT_VALIDITY"),
        ({"CREDWARD_WEBHOOK_CA_VALIDITY": "20m"}, "CREDWARD_WEBHOOK_CA_VALIDITY"),
        ({"CREDWARD_SECURITY_BASE_URL": "credward-security"}, "CREDWARD_SECURITY_BASE_URL"),
        ({"CREDWARD_WEBHOOK_MOUNT_ROOT": "relative"}, "CREDWARD_WEBHOOK_MOUNT_ROOT"),
    ],
)
def test_malformed_keys_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(WebhookSettingsError, match=named):
        WebhookSettings.from_env({"CREDWARD_WEBHOOK_PORT": "9443", **env})


def test_short_lifetimes_for_tests_are_accepted() -> None:
    env = {
        "CREDWARD_WEBHOOK_PORT": "9443",
        "CREDWARD_WEBHOOK_CA_VALIDITY": "18s",
        "CREDWARD_WEBHOOK_CERT_VALIDITY": "9s",
        "CREDWARD_WEBHOOK_OVERLAP": "2s",
        "CREDWARD_WEBHOOK_SYNC_INTERVAL": "500ms",
    }
    settings = WebhookSettings.from_env(env)
    assert settings is not None
    assert settings.sync_interval == timedelta(milliseconds=500)
