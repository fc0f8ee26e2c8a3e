"""`helm install`, `helm upgrade` and `helm uninstall` of the chart into a real API server.

The control plane has no nodes: Deployments' Pods are created by the replicaset controller and admitted
(Pod Security included) but never run. So these tests prove what the API server decides: every object
accepted, Pods admitted in a namespace that enforces the restricted Pod Security Standard, the RBAC
the chart grants allows what the code does (and no more, for a sample of what it must not do), the
shared Secrets survive upgrades and uninstall, and the CRDs stay unless crds.keep=false.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.chart.test_render import OPTIONS
from tests.support.helm import CHART_DIR, Helm, container, env_of, set_args
from tests.support.kube import apply, condition, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.pki import CertificateAuthority
from credward.devcluster.plane import free_port
from credward.devcluster.processes import operator_process
from credward.webhook import WebhookSettings
from credward.webhook.configuration import mutating, validating

pytestmark = pytest.mark.integration

CRDS = ("serviceaccountcredentials.credward.io", "rolebindings.credward.io")
RESTRICTED = "pod-security.kubernetes.io/enforce"
HA = {
    "operator.replicas": "2",
    "security.replicas": "2",
    "security.storage.type": '"postgresql"',
    "security.storage.postgresql.dsnSecret.name": '"credward-db"',
}


def _restricted_namespace(plane: ControlPlane, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{secrets.token_hex(3)}"
    plane.kubectl("create", "namespace", name)
    plane.kubectl("label", "namespace", name, f"{RESTRICTED}=restricted", f"{RESTRICTED}-version=latest")
    yield name
    plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def release_ns(chart_plane: ControlPlane) -> Iterator[str]:
    yield from _restricted_namespace(chart_plane, "credward")


@pytest.fixture
def no_crds(chart_plane: ControlPlane) -> None:
    """This module's plane to itself: start without credward's CRDs (another test may have kept them)."""
    chart_plane.kubectl("delete", "crd", *CRDS, "--ignore-not-found", "--wait=true")


def manifest(helm: Helm, release: str, namespace: str) -> list[dict[str, Any]]:
    out = helm.run("get", "manifest", release, "--namespace", namespace).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def exists(plane: ControlPlane, obj: dict[str, Any], namespace: str) -> bool:
    kind = f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0]}" if "/" in obj["apiVersion"] else obj["kind"]
    args = ["get", kind, obj["metadata"]["name"], "-o", "name"]
    if obj["metadata"].get("namespace"):
        args += ["-n", namespace]
    return plane.kubectl(*args, check=False).returncode == 0


def gone(plane: ControlPlane, kind: str, name: str) -> bool:
    return plane.kubectl("get", kind, name, check=False).returncode != 0


def can(plane: ControlPlane, who: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    """``resource`` is ``kind[.group][/name]``, or ``kind.group#subresource``."""
    resource, _, subresource = resource.partition("#")
    args = ["auth", "can-i", verb, resource, f"--as={who}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = plane.kubectl(*args, check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stderr
    return proc.stdout.strip() == "yes"


def pods(plane: ControlPlane, namespace: str, component: str) -> list[dict[str, Any]]:
    out = plane.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/component={component}", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def failed_replicasets(plane: ControlPlane, namespace: str) -> list[str]:
    out = json.loads(plane.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout)
    return [
        f"{rs['metadata']['name']}: {c.get('message')}"
        for rs in out["items"]
        for c in (rs.get("status") or {}).get("conditions", [])
        if c["type"] == "ReplicaFailure" and c["status"] == "True"
    ]


def assert_pods_admitted(plane: ControlPlane, namespace: str, expected: dict[str, int]) -> None:
    """The replicaset controller created (so admission accepted) the Pods of every Deployment."""
    for component, count in expected.items():

        def created(component: str = component, count: int = count) -> bool:
            return len(pods(plane, namespace, component)) >= count or bool(failed_replicasets(plane, namespace))

        wait_for(created, f"{count} {component} Pod(s) in {namespace}", timeout=90)
    assert failed_replicasets(plane, namespace) == []


def create_pod_from_template(plane: ControlPlane, namespace: str, deployment: dict[str, Any], name: str) -> None:
    """A Pod straight from a Deployment's template, so a refusal would print Pod Security's own reason."""
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **template["metadata"]},
        "spec": template["spec"],
    }
    pod["metadata"]["labels"] = {**pod["metadata"]["labels"], "credward-test": "direct"}
    plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))


def secret_state(plane: ControlPlane, namespace: str, name: str) -> tuple[str, str, dict[str, str]]:
    obj = get(plane, "secret", name, namespace)
    assert obj is not None, f"Secret {name} is gone"
    return obj["metadata"]["uid"], obj["metadata"]["resourceVersion"], obj["data"]


def test_install_upgrade_uninstall(
    chart_plane: ControlPlane, cluster_helm: Helm, release_ns: str, no_crds: None
) -> None:
    ns, plane = release_ns, chart_plane
    operator_sa = f"system:serviceaccount:{ns}:credward-operator"
    # A GitOps user supplies the hash key before installing; the operator would create it otherwise.
    hash_key = secrets.token_hex(32)
    plane.kubectl("create", "secret", "generic", "credward-hash-key", "-n", ns, f"--from-literal=hash-key={hash_key}")

    installed = cluster_helm.run("install", "credward", str(CHART_DIR), "--namespace", ns).stdout
    # NOTES.txt: a first credential and a token, with this release's names.
    assert "kind: ServiceAccountCredential" in installed
    assert "port-forward service/credward-security 9000:9000" in installed
    assert "grant_type=client_credentials" in installed
    assert f"http://credward-security.{ns}.svc:9000" in installed

    # Every object of the release was accepted and is there.
    objects = manifest(cluster_helm, "credward", ns)
    assert {o["kind"] for o in objects} >= {"CustomResourceDefinition", "Deployment", "ClusterRole", "Service"}
    missing = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if not exists(plane, o, ns)]
    assert missing == []
    for crd in CRDS:
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")

    # The restricted namespace admits the Pods: those the replicaset controller creates, and the same
    # templates created directly; while a Pod that breaks the standard is refused.
    assert_pods_admitted(plane, ns, {"operator": 1, "security": 1})
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for name, deploy in deployments.items():
        create_pod_from_template(plane, ns, deploy, f"{name}-direct")
    root = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    refused = plane.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(root), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr

    # The operator bootstraps the signing keys Secret in its namespace (with its own permissions).
    plane.kubectl(
        "create", "secret", "generic", "credward-signing-keys", "-n", ns, f"--as={operator_sa}",
        "--from-literal=current.pem=placeholder",
    )  # fmt: skip
    check_operator_rbac(plane, ns, operator_sa)
    check_webhook_configuration_as_operator(plane, objects, ns, operator_sa)
    check_security_rbac(plane, ns)
    check_aggregated_roles(plane)
    before = {name: secret_state(plane, ns, name) for name in ("credward-hash-key", "credward-signing-keys")}
    assert base64.b64decode(before["credward-hash-key"][2]["hash-key"]).decode() == hash_key

    # Upgrade to the HA option: leader election, PostgreSQL, disruption budgets; the Secrets stay as they were.
    plane.kubectl(
        "create", "secret", "generic", "credward-db", "-n", ns, "--from-literal=dsn=postgresql://credward@db/credward"
    )
    cluster_helm.run("upgrade", "credward", str(CHART_DIR), "--namespace", ns, *set_args(HA))
    upgraded = manifest(cluster_helm, "credward", ns)
    live_operator = get(plane, "deployment", "credward-operator", ns)
    assert live_operator is not None
    assert env_of(container([live_operator], "operator"))["CREDWARD_LEADER_ELECTION"]["value"] == "true"
    for pdb in ("credward-operator", "credward-security"):
        assert get(plane, "poddisruptionbudget", pdb, ns) is not None
    assert [o for o in upgraded if not exists(plane, o, ns)] == []
    assert_pods_admitted(plane, ns, {"operator": 2, "security": 2})
    assert {name: secret_state(plane, ns, name) for name in before} == before
    assert get(plane, "persistentvolumeclaim", "credward-security-data", ns) is not None  # resource-policy keep

    cluster_helm.run("uninstall", "credward", "--namespace", ns)
    wait_for(lambda: get(plane, "deployment", "credward-operator", ns) is None, "the operator Deployment to go")
    assert get(plane, "clusterrole", "credward-operator", "") is None
    for crd in CRDS:  # crds.keep (the default): credentials in the cluster survive an uninstall
        assert plane.kubectl("get", "crd", crd, check=False).returncode == 0
    assert {name: secret_state(plane, ns, name) for name in before} == before
    assert get(plane, "persistentvolumeclaim", "credward-security-data", ns) is not None


def check_operator_rbac(plane: ControlPlane, ns: str, sa: str) -> None:
    """What credward.operator.kube, credward.webhook and kopf call: allowed; a sample of the rest: refused."""
    other = "some-team"
    allowed = [
        ("get", "serviceaccountcredentials.credward.io", other),
        ("watch", "serviceaccountcredentials.credward.io", None),
        ("patch", "serviceaccountcredentials.credward.io#status", other),
        ("patch", "rolebindings.credward.io#status", other),
        ("list", "rolebindings.credward.io", other),
        ("watch", "rolebindings.credward.io", None),
        ("get", "secrets", other),
        ("watch", "secrets", None),
        ("patch", "secrets", other),
        ("create", "secrets", other),
        ("update", "secrets/credward-webhook-tls", ns),
        ("create", "events", other),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("get", "namespaces/some-team", None),
        ("watch", "deployments.apps", None),
        ("get", "daemonsets.apps", other),
        ("patch", "statefulsets.apps", other),
        ("watch", "statefulsets.apps", None),
        ("watch", "jobs.batch", None),
        ("get", "leases.coordination.k8s.io/credward-operator", ns),
        ("update", "leases.coordination.k8s.io/credward-operator", ns),
        ("create", "leases.coordination.k8s.io", ns),
    ]
    refused = [
        ("delete", "secrets", other),  # the garbage collector deletes credential Secrets
        ("update", "secrets/someone-elses", ns),
        ("update", "secrets/credward-webhook-tls", other),
        ("get", "pods", other),
        ("delete", "deployments.apps", other),
        ("get", "configmaps", other),
        ("delete", "serviceaccountcredentials.credward.io", other),
        ("update", "serviceaccountcredentials.credward.io#status", other),
        ("create", "rolebindings.credward.io", other),
        ("update", "leases.coordination.k8s.io/another-lease", ns),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/someone-elses", None),
        ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io/someone-elses", None),
        ("create", "tokenreviews.authentication.k8s.io", None),
    ]
    wrong = [f"{v} {r} in {n}: expected yes" for v, r, n in allowed if not can(plane, sa, v, r, n)]
    wrong += [f"{v} {r} in {n}: expected no" for v, r, n in refused if can(plane, sa, v, r, n)]
    assert wrong == []


def check_webhook_configuration_as_operator(
    plane: ControlPlane, objects: list[dict[str, Any]], ns: str, sa: str
) -> None:
    """The operator's own configurations (credward.webhook.configuration), applied as it does, are accepted."""
    (deploy,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "credward-operator"]
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", ns) for e in c["env"]}  # fieldRefs: the namespace (and a pod name)
    settings = WebhookSettings.from_env(env, port=int(next(a for a in c["args"] if "webhook-port" in a).split("=")[1]))
    assert settings is not None
    bundle = CertificateAuthority().cert_pem
    for kind, body in (
        ("mutatingwebhookconfiguration", mutating(settings, bundle)),
        ("validatingwebhookconfiguration", validating(settings, bundle)),
    ):
        plane.kubectl(
            "apply",
            "--server-side",
            "--field-manager=credward-webhook",
            f"--as={sa}",
            "-f",
            "-",
            input=json.dumps(body),
        )
        live = get(plane, kind, settings.configuration, "")
        assert live is not None
        service = live["webhooks"][0]["clientConfig"]["service"]
        assert (service["namespace"], service["name"], service["port"]) == (ns, "credward-webhook", 443)
        plane.kubectl("delete", kind, settings.configuration, f"--as={sa}")


def check_security_rbac(plane: ControlPlane, ns: str) -> None:
    sa = f"system:serviceaccount:{ns}:credward-security"
    assert can(plane, sa, "create", "tokenreviews.authentication.k8s.io")
    for verb, resource in (("get", "secrets"), ("list", "serviceaccountcredentials.credward.io"), ("get", "pods")):
        assert not can(plane, sa, verb, resource, ns), f"the security service may {verb} {resource}"


def check_aggregated_roles(plane: ControlPlane) -> None:
    """Namespace editors manage credentials and bindings; viewers read them; neither gains Secrets."""
    team = f"team-{secrets.token_hex(3)}"
    plane.kubectl("create", "namespace", team)
    try:
        plane.kubectl("create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", team)
        plane.kubectl("create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", team)
        for resource in ("serviceaccountcredentials.credward.io", "rolebindings.credward.io"):
            # The clusterrole-aggregation controller folds the chart's roles into edit and view.
            wait_for(partial(can, plane, "alice", "create", resource, team), f"edit to cover {resource}")
            assert can(plane, "alice", "delete", resource, team)
            wait_for(partial(can, plane, "bob", "list", resource, team), f"view to cover {resource}")
            assert not can(plane, "bob", "create", resource, team)
            assert not can(plane, "bob", "create", resource, "default")  # per namespace, not cluster-wide
        assert not can(plane, "bob", "get", "secrets", team)
        assert not can(plane, "alice", "patch", "serviceaccountcredentials.credward.io#status", team)
    finally:
        plane.kubectl("delete", "namespace", team, "--wait=false", check=False)


def test_uninstall_without_keep_removes_the_crds(
    chart_plane: ControlPlane, cluster_helm: Helm, release_ns: str, no_crds: None
) -> None:
    cluster_helm.run("install", "other", str(CHART_DIR), "--namespace", release_ns, *set_args({"crds.keep": "false"}))
    for crd in CRDS:
        chart_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    assert_pods_admitted(chart_plane, release_ns, {"operator": 1, "security": 1})
    cluster_helm.run("uninstall", "other", "--namespace", release_ns)
    for crd in CRDS:
        wait_for(partial(gone, chart_plane, "crd", crd), f"{crd} to go")


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_is_accepted_by_the_api_server(
    chart_plane: ControlPlane, cluster_helm: Helm, release_ns: str, option: str
) -> None:
    """Server-side dry run of each documented option's objects (the ServiceMonitor's CRD is not in this cluster)."""
    rendered = cluster_helm.run(
        "template", "credward", str(CHART_DIR), "--namespace", release_ns, *set_args(OPTIONS[option])
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "ServiceMonitor"]
    proc = chart_plane.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        release_ns,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
    )
    accepted = [line for line in proc.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(docs), proc.stdout


def token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster, with a ServiceAccount token as the user."""
    doc = yaml.safe_load(plane.kubeconfig.read_text())
    doc["users"] = [{"name": "sa", "user": {"token": token}}]
    doc["contexts"] = [{"name": "sa", "context": {"cluster": doc["clusters"][0]["name"], "user": "sa"}}]
    doc["current-context"] = "sa"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def test_the_operator_works_with_exactly_the_charts_permissions(
    chart_plane: ControlPlane, cluster_helm: Helm, release_ns: str, no_crds: None, tmp_path: Path
) -> None:
    """The real operator, webhook included, as the chart's ServiceAccount with the chart's settings.

    Run outside the cluster (there are no nodes) with a token of the ServiceAccount, so every API call
    it makes is authorized by the chart's RBAC alone: a credential becomes Ready, its binding Synced,
    and an opted-in Pod is injected through the configurations it writes, with no call refused.
    """
    ns, plane = release_ns, chart_plane
    cluster_helm.run("install", "credward", str(CHART_DIR), "--namespace", ns)
    try:
        for crd in CRDS:
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
        token = plane.kubectl("create", "token", "credward-operator", "-n", ns, "--duration=1h").stdout.strip()
        deploy = get(plane, "deployment", "credward-operator", ns)
        assert deploy is not None
        chart_env = {e["name"]: e["value"] for e in container([deploy], "operator")["env"] if "value" in e}
        port = free_port()
        env = {
            # The chart's settings, but the hash key: the test's service has its own (the file below).
            **{k: v for k, v in chart_env.items() if k.startswith("CREDWARD_WEBHOOK_")},
            **{
                k: chart_env[k] for k in ("CREDWARD_RESYNC", "CREDWARD_SIGNING_KEYS_SECRET", "CREDWARD_SIGNING_KEY_ALG")
            },
            "KUBECONFIG": str(token_kubeconfig(plane, token, tmp_path / "kubeconfig-operator")),
            # What the Pod would get from the downward API, and the loopback stand-ins for the Services.
            "CREDWARD_POD_NAMESPACE": ns,
            "CREDWARD_POD_NAME": "credward-operator-0",
            "CREDWARD_WEBHOOK_NAMESPACE": ns,
            "CREDWARD_WEBHOOK_URL": f"https://127.0.0.1:{port}",
            "CREDWARD_WEBHOOK_BIND": "127.0.0.1",
            "CREDWARD_INFO_INTERVAL": "1s",
        }
        team = f"team-{secrets.token_hex(3)}"
        plane.kubectl("create", "namespace", team)
        with (
            SecurityServer(tmp_path / "security") as security,
            operator_process(
                plane,
                security_base_url=security.base_url,
                hash_key_file=security.hash_key_file,
                token_file=security.token_file,
                log_path=tmp_path / "operator.log",
                extra_args=[f"--webhook-port={port}"],
                env=env,
            ),
        ):
            credential = {
                "apiVersion": "credward.io/v1alpha1",
                "kind": "ServiceAccountCredential",
                "metadata": {"name": "ci"},
                "spec": {"displayName": "CI"},
            }
            binding = {
                "apiVersion": "credward.io/v1alpha1",
                "kind": "RoleBinding",
                "metadata": {"name": "ci-store"},
                "spec": {
                    "serviceAccount": "ci",
                    "roles": ["builder"],
                    "permissions": [{"verbs": ["read"], "path": ["store"]}],
                },
            }
            # It bootstrapped the signing keys in its namespace, as its ServiceAccount.
            assert get(plane, "secret", chart_env["CREDWARD_SIGNING_KEYS_SECRET"], ns) is not None
            apply(plane, credential, team)
            apply(plane, binding, team)
            ready = partial(is_true, plane, "serviceaccountcredential", "ci", team, "Ready")
            wait_for(ready, "the credential to be Ready", timeout=90)
            assert get(plane, "secret", "ci-credentials", team) is not None
            wait_for(
                partial(is_true, plane, "rolebindings.credward.io", "ci-store", team, "Synced"), "Synced", timeout=90
            )
            wait_for(partial(get, plane, "mutatingwebhookconfiguration", "credward", ""), "the webhook configuration")
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "app",
                    "labels": {"credward.io/inject": "true"},
                    "annotations": {"credward.io/credential": "ci"},
                },
                "spec": {"containers": [{"name": "app", "image": "example/app"}]},
            }
            plane.kubectl("create", "-n", team, "-f", "-", input=json.dumps(pod))
            stored = get(plane, "pod", "app", team)
            assert stored is not None
            assert "credward-ci" in {v["name"] for v in stored["spec"]["volumes"]}
        log = (tmp_path / "operator.log").read_text()
        assert "Forbidden" not in log
        assert "Not enough permissions" not in log  # kopf's word for a refused watch
        calls = [
            (e["verb"], e.get("objectRef", {}).get("resource"), e.get("responseStatus", {}).get("code"))
            for e in plane.audit_events()
            if e["user"]["username"] == f"system:serviceaccount:{ns}:credward-operator"
        ]
        # It really wrote as the ServiceAccount (the Secret, the status, the webhook configuration) ...
        assert {
            ("patch", "secrets"),
            ("patch", "serviceaccountcredentials"),
            ("patch", "mutatingwebhookconfigurations"),
        } <= {(verb, resource) for verb, resource, _ in calls}
        # ... and nothing it asked for was refused.
        assert [c for c in calls if c[2] == 403] == []
    finally:
        plane.kubectl(
            "delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", "credward", "--ignore-not-found"
        )
        cluster_helm.run("uninstall", "credward", "--namespace", ns)


def is_true(plane: ControlPlane, kind: str, name: str, namespace: str, type_: str) -> bool:
    found = condition(get(plane, kind, name, namespace), type_)
    return bool(found and found["status"] == "True")
