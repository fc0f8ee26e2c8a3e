"""The chart runs what the image and the CLI really offer: ENTRYPOINT, user, command lines, ports, probes.

Each container's args are parsed by credward's own argparse parser and its environment read by the
components' own settings loaders, so a renamed flag or variable fails here, not in a cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from tests.support.helm import CHART_DIR, Helm, container, deployment, env_of, find, set_args

from credward.cli import build_parser
from credward.operator.cli import _run as operator_run
from credward.security.app import ENDPOINTS
from credward.security.cli import serve_command
from credward.security.settings import AdminAuthMode, load_settings
from credward.webhook import WebhookSettings
from credward.webhook.configuration import PATH_MUTATE
from credward.webhook.settings import PREFIX as WEBHOOK_PREFIX

pytestmark = pytest.mark.integration

REPO_ROOT = CHART_DIR.parent.parent
NAMESPACE = "credward"
OPERATOR_DIR = REPO_ROOT / "operator" / "credward"
# Agreed between the chart and the operator (leader election, the bootstrapped shared Secrets, the
# Pod's identity): the operator reads them once those parts land; every other variable the chart
# sets must already be read by the code.
AGREED: set[str] = set()  # settings the chart sets ahead of the code reading them: none


def dockerfile() -> dict[str, Any]:
    text = (REPO_ROOT / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]  # the runtime stage
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", final, re.MULTILINE)
    user = re.search(r"^USER (\d+):(\d+)$", final, re.MULTILINE)
    assert entrypoint, "the runtime stage has an exec-form ENTRYPOINT"
    assert user, "the runtime stage has a numeric USER uid:gid"
    return {"entrypoint": json.loads(entrypoint.group(1)), "uid": int(user.group(1)), "gid": int(user.group(2))}


def resolve_env(entries: dict[str, dict[str, Any]], secrets: dict[str, str]) -> dict[str, str]:
    """The environment a Pod in NAMESPACE would see (downward API and Secret references filled in)."""
    env = {}
    for name, entry in entries.items():
        if "value" in entry:
            env[name] = str(entry["value"])
        elif "fieldRef" in entry["valueFrom"]:
            assert entry["valueFrom"]["fieldRef"]["fieldPath"] in ("metadata.namespace", "metadata.name")
            env[name] = NAMESPACE if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" else "pod-0"
        else:
            env[name] = secrets[entry["valueFrom"]["secretKeyRef"]["name"]]
    return env


def mount_of(deploy: dict[str, Any], volume: str) -> str:
    (mount,) = [m for m in deploy["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == volume]
    return str(mount["mountPath"])


def port_named(c: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return int(port)


def test_image_entrypoint_and_user_are_what_the_chart_relies_on(helm: Helm) -> None:
    image = dockerfile()
    assert image["entrypoint"] == ["credward"]
    values = helm.template()
    for component in ("operator", "security"):
        c = container(values, component)
        assert "command" not in c  # the image's ENTRYPOINT runs; args are credward's subcommand
        pod = deployment(values, component)["spec"]["template"]["spec"]["securityContext"]
        assert (pod["runAsUser"], pod["runAsGroup"]) == (image["uid"], image["gid"])


@pytest.mark.parametrize("option", [{}, {"operator.verbose": "true", "webhook.port": "10443"}])
def test_operator_command_line_parses_and_its_ports_match_probes_and_services(
    helm: Helm, option: dict[str, str]
) -> None:
    docs = helm.template(*set_args(option))
    c = container(docs, "operator")
    args = build_parser().parse_args(c["args"])
    assert args.func is operator_run
    assert args.all_namespaces is False
    assert not args.namespaces
    assert args.liveness_port == port_named(c, "health")
    assert args.webhook_port == port_named(c, "webhook")
    assert args.verbose is (option.get("operator.verbose") == "true")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}  # credward.operator.metrics
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "webhook", "scheme": "HTTPS"}

    env = resolve_env(env_of(c), {})
    webhook = WebhookSettings.from_env(env, port=args.webhook_port)
    assert webhook is not None
    service = find(docs, "Service", webhook.service)
    assert service["spec"]["ports"] == [
        {"name": "https", "port": webhook.service_port, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment(docs, "operator")["spec"]["selector"]["matchLabels"]
    assert webhook.namespace == NAMESPACE
    assert f"{webhook.service}.{NAMESPACE}.svc" in webhook.tls_policy.dns_names
    assert webhook.security_base_url == f"http://credward-security.{NAMESPACE}.svc:9000"
    assert PATH_MUTATE == "/mutate"  # the path the operator writes into clientConfig.service
    role = find(docs, "ClusterRole", "credward-operator")
    names = [r.get("resourceNames") for r in role["rules"] if "admissionregistration.k8s.io" in r["apiGroups"]]
    assert [webhook.configuration] in names
    lease_rule = find(docs, "Role", "credward-operator")["rules"][1]
    assert lease_rule["resourceNames"] == [env["CREDWARD_LEADER_ELECTION_LEASE"]]
    tls_rule = find(docs, "Role", "credward-operator")["rules"][0]
    assert webhook.tls_secret in tls_rule["resourceNames"]


def test_operator_environment_names_are_read_by_the_operator(helm: Helm) -> None:
    source = "\n".join(p.read_text() for p in OPERATOR_DIR.rglob("*.py"))
    c = container(helm.template(*set_args({"operator.replicas": "2"})), "operator")
    webhook_keys = {f.name for f in fields(WebhookSettings)}
    for name in env_of(c):
        if name.startswith(WEBHOOK_PREFIX):  # read as PREFIX + field name (credward.webhook.settings)
            assert name.removeprefix(WEBHOOK_PREFIX).lower() in webhook_keys, f"the webhook has no setting {name}"
        elif name not in AGREED:
            assert f'"{name}"' in source, f"the operator reads no {name}"


def test_operator_admin_token_is_the_one_the_service_accepts(helm: Helm) -> None:
    docs = helm.template()
    operator, security = deployment(docs, "operator"), deployment(docs, "security")
    env = resolve_env(env_of(container(docs, "operator")), {})
    token_file = Path(env["CREDWARD_SECURITY_TOKEN_FILE"])
    assert str(token_file.parent) == mount_of(operator, "security-token")
    (projected,) = [v for v in operator["spec"]["template"]["spec"]["volumes"] if v["name"] == "security-token"]
    source = projected["projected"]["sources"][0]["serviceAccountToken"]
    assert source["path"] == token_file.name
    service_env = resolve_env(env_of(container(docs, "security")), {})
    settings = load_settings({}, service_env)
    assert settings.admin_auth is AdminAuthMode.TOKENREVIEW
    assert settings.admin_token_audiences == (source["audience"],)
    sa = operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert settings.admin_allow == (f"system:serviceaccount:{NAMESPACE}:{sa}",)
    assert security["spec"]["template"]["spec"]["automountServiceAccountToken"] is True  # TokenReview in-cluster


@pytest.mark.parametrize(
    "option",
    [
        {},
        {
            "security.replicas": "2",
            "security.storage.type": '"postgresql"',
            "security.storage.postgresql.dsnSecret.name": '"db"',
        },
    ],
)
def test_security_command_line_and_environment_load_and_match_the_pod(helm: Helm, option: dict[str, str]) -> None:
    docs = helm.template(*set_args(option))
    c, deploy = container(docs, "security"), deployment(docs, "security")
    args = build_parser().parse_args(c["args"])
    assert args.func is serve_command
    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "security_command")}
    settings = load_settings(flags, resolve_env(env_of(c), {"db": "postgresql://credward@db.example/credward"}))
    assert (
        settings.port == port_named(c, "http") == find(docs, "Service", "credward-security")["spec"]["ports"][0]["port"]
    )
    assert settings.host == "0.0.0.0"
    assert settings.issuer == f"http://credward-security.{NAMESPACE}.svc:9000"
    operator_env = env_of(container(docs, "operator"))
    assert operator_env["CREDWARD_SIGNING_KEY_ALG"]["value"] == settings.signing_alg.value  # keys it can sign with
    assert settings.dev_mode is False  # keys and hash key come from the operator's Secrets
    assert str(settings.hash_key_file.parent) == mount_of(deploy, "hash-key")
    assert str(settings.keys_dir) == mount_of(deploy, "signing-keys")
    if settings.store_url.startswith("sqlite:"):
        assert str(Path(settings.store_url.removeprefix("sqlite:///")).parent) == mount_of(deploy, "data")
    else:
        assert settings.store_url.startswith("postgresql://")
    routes = {(method, path) for method, path, _ in ENDPOINTS}
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert ("GET", get["path"]) in routes
        assert get["port"] == "http"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the store and the keys, not mere liveness
