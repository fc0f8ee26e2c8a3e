"""The configurations credward writes: who is sent to which webhook, and how each fails."""

from __future__ import annotations

import base64

from credward.webhook.configuration import mutating, validating
from credward.webhook.settings import WebhookSettings

SETTINGS = WebhookSettings(port=9443, namespace="credward")
BUNDLE = b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"


def test_only_opted_in_pods_reach_the_failing_closed_webhook() -> None:
    hooks = mutating(SETTINGS, BUNDLE)["webhooks"]
    assert [h["name"] for h in hooks] == ["inject.pods.credward.io", "inject-warn.pods.credward.io"]
    for hook in hooks:
        assert hook["failurePolicy"] == "Fail"
        assert hook["objectSelector"] == {"matchLabels": {"credward.io/inject": "true"}}
        assert hook["rules"][0]["resources"] == ["pods"]
        assert hook["rules"][0]["operations"] == ["CREATE"]
        assert hook["clientConfig"]["service"]["namespace"] == "credward"
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == BUNDLE


def test_validating_webhooks_fail_open_and_skip_opted_in_pods() -> None:
    hooks = {h["name"]: h for h in validating(SETTINGS, BUNDLE)["webhooks"]}
    assert set(hooks) == {
        "deny.pods.consumption.credward.io",
        "deny.workloads.consumption.credward.io",
        "warn.pods.consumption.credward.io",
        "warn.workloads.consumption.credward.io",
    }
    assert {h["failurePolicy"] for h in hooks.values()} == {"Ignore"}
    pods = hooks["deny.pods.consumption.credward.io"]
    assert pods["objectSelector"]["matchExpressions"] == [
        {"key": "credward.io/inject", "operator": "NotIn", "values": ["true"]}
    ]
    # A Deployment's own labels say nothing about its template: workloads are always checked.
    assert "objectSelector" not in hooks["deny.workloads.consumption.credward.io"]
    resources = {r for rule in hooks["deny.workloads.consumption.credward.io"]["rules"] for r in rule["resources"]}
    assert resources == {"deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"}


def test_every_webhook_skips_the_operators_namespace_and_kube_system() -> None:
    for config in (mutating(SETTINGS, BUNDLE), validating(SETTINGS, BUNDLE)):
        for hook in config["webhooks"]:
            excluded, mode = hook["namespaceSelector"]["matchExpressions"]
            assert excluded == {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["credward", "kube-system"],
            }
            assert mode["key"] == "credward.io/secret-consumption"
            assert mode["operator"] == ("In" if "warn" in hook["name"] else "NotIn")
            assert hook["sideEffects"] == "None"
            assert hook["timeoutSeconds"] == 5
