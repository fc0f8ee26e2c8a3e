"""`helm lint` and `helm template` of charts/credward with the default values and each documented option.

Rendering needs the real Helm binary but no cluster; what the API server makes of the objects is
tested in test_install.py.
"""

from __future__ import annotations

import pytest
import yaml
from tests.support.helm import CHART_DIR, Helm, container, deployment, env_of, find, kinds, pod_templates, set_args

pytestmark = pytest.mark.integration

HA = {
    "operator.replicas": "2",
    "security.replicas": "3",
    "security.storage.type": '"postgresql"',
    "security.storage.postgresql.dsnSecret.name": '"credward-db"',
}
# Each documented option (docs/helm.md), as --set-json values.
OPTIONS: dict[str, dict[str, str]] = {
    "defaults": {},
    "ha": HA,
    "no-crds": {"crds.enabled": "false"},
    "crds-not-kept": {"crds.keep": "false"},
    "no-webhook": {"webhook.enabled": "false"},
    "network-policy": {
        "networkPolicy.enabled": "true",
        "networkPolicy.securityFrom": '[{"namespaceSelector": {"matchLabels": {"team": "a"}}}]',
        "networkPolicy.metricsFrom": '[{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]',
    },
    "service-monitor": {"serviceMonitor.enabled": "true", "serviceMonitor.labels": '{"release": "prom"}'},
    "gitops-secrets": {
        "sharedSecrets.hashKey.name": '"my-hash-key"',
        "sharedSecrets.signingKeys.name": '"my-signing-keys"',
    },
    "existing-claim": {"security.storage.sqlite.persistence.existingClaim": '"credward-db"'},
    "issuer": {"security.issuer": '"https://tokens.example.org"'},
}


@pytest.mark.parametrize("option", OPTIONS)
def test_lint_is_clean(helm: Helm, option: str) -> None:
    proc = helm.run("lint", "--strict", str(CHART_DIR), *set_args(OPTIONS[option]))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("option", OPTIONS)
def test_template_never_prints_a_secret_and_every_object_is_labelled(helm: Helm, option: str) -> None:
    docs = helm.template(*set_args(OPTIONS[option]))
    assert "Secret" not in kinds(docs)  # the shared Secrets are the operator's, never the chart's
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/instance") == "credward", doc["metadata"]["name"]
        if doc["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "credward", doc["metadata"]["name"]


def test_defaults(helm: Helm) -> None:
    docs = helm.template()
    assert kinds(docs) == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PersistentVolumeClaim",
    }
    operator = deployment(docs, "operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"]["type"] == "Recreate"  # never two reconcilers without leader election
    assert env_of(container(docs, "operator"))["CREDWARD_LEADER_ELECTION"]["value"] == "false"
    security = deployment(docs, "security")
    assert security["spec"]["replicas"] == 1
    assert security["spec"]["strategy"]["type"] == "Recreate"
    env = env_of(container(docs, "security"))
    assert env["CREDWARD_SECURITY_STORE_URL"]["value"] == "sqlite:////var/lib/credward/credward.db"
    pvc = find(docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in security["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    service = find(docs, "Service", "credward-security")
    assert service["spec"]["ports"][0]["port"] == 9000


def test_crds_are_the_repository_crds_with_the_keep_policy(helm: Helm) -> None:
    repo_crds = {
        doc["metadata"]["name"]: doc
        for path in sorted((CHART_DIR.parent.parent / "crds").glob("*.yaml"))
        for doc in [yaml.safe_load(path.read_text())]
    }
    rendered = {d["metadata"]["name"]: d for d in helm.template() if d["kind"] == "CustomResourceDefinition"}
    assert rendered.keys() == repo_crds.keys()
    for name, crd in rendered.items():
        assert crd["spec"] == repo_crds[name]["spec"], name  # numbers and CEL rules survive the round trip
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    not_kept = helm.template(*set_args(OPTIONS["crds-not-kept"]))
    assert all("annotations" not in d["metadata"] for d in not_kept if d["kind"] == "CustomResourceDefinition")
    assert "CustomResourceDefinition" not in kinds(helm.template(*set_args(OPTIONS["no-crds"])))


def test_ha_turns_on_leader_election_postgresql_and_disruption_budgets(helm: Helm) -> None:
    docs = helm.template(*set_args(HA))
    operator, security = deployment(docs, "operator"), deployment(docs, "security")
    assert operator["spec"]["replicas"] == 2
    assert security["spec"]["replicas"] == 3
    env = env_of(container(docs, "operator"))
    assert env["CREDWARD_LEADER_ELECTION"]["value"] == "true"
    assert env["CREDWARD_LEADER_ELECTION_LEASE"]["value"] == "credward-operator"
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    store = env_of(container(docs, "security"))["CREDWARD_SECURITY_STORE_URL"]
    assert store["valueFrom"]["secretKeyRef"] == {"name": "credward-db", "key": "dsn"}
    assert "PersistentVolumeClaim" not in kinds(docs)
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(pdbs) == {"credward-operator", "credward-security"}
    for name, pdb in pdbs.items():
        target = deployment(docs, name.removeprefix("credward-"))
        assert pdb["spec"]["selector"]["matchLabels"] == target["spec"]["selector"]["matchLabels"]


def test_webhook_off_removes_its_port_service_and_permissions(helm: Helm) -> None:
    docs = helm.template(*set_args(OPTIONS["no-webhook"]))
    operator = container(docs, "operator")
    assert not any(a.startswith("--webhook-port") for a in operator["args"])
    assert not any(n.startswith("CREDWARD_WEBHOOK_") for n in env_of(operator))
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Service"] == ["credward-security"]
    role = find(docs, "ClusterRole", "credward-operator")
    assert not any("admissionregistration.k8s.io" in r["apiGroups"] for r in role["rules"])


def test_network_policy_lets_the_operator_and_the_named_peers_in(helm: Helm) -> None:
    docs = helm.template(*set_args(OPTIONS["network-policy"]))
    security = find(docs, "NetworkPolicy", "credward-security")
    peers = security["spec"]["ingress"][0]["from"]
    assert peers[0]["podSelector"]["matchLabels"] == deployment(docs, "operator")["spec"]["selector"]["matchLabels"]
    assert {"namespaceSelector": {"matchLabels": {"team": "a"}}} in peers
    operator = find(docs, "NetworkPolicy", "credward-operator")
    webhook_rule, metrics_rule = operator["spec"]["ingress"]
    assert "from" not in webhook_rule  # the API server is no Pod a selector could name
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    default = find(helm.template(*set_args({"networkPolicy.enabled": "true"})), "NetworkPolicy", "credward-security")
    assert default["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {}}]  # tokens and JWKS for everyone


def test_service_monitor_scrapes_both_components(helm: Helm) -> None:
    docs = helm.template(*set_args(OPTIONS["service-monitor"]))
    monitor = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"health", "http"}
    metrics = find(docs, "Service", "credward-operator-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "health"


def test_gitops_secret_names_reach_both_components_and_the_role(helm: Helm) -> None:
    docs = helm.template(*set_args(OPTIONS["gitops-secrets"]))
    env = env_of(container(docs, "operator"))
    assert env["CREDWARD_HASH_KEY_SECRET"]["value"] == "my-hash-key"
    assert env["CREDWARD_SIGNING_KEYS_SECRET"]["value"] == "my-signing-keys"
    volumes = {v["name"]: v for v in deployment(docs, "security")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["hash-key"]["secret"]["secretName"] == "my-hash-key"
    assert volumes["signing-keys"]["secret"]["secretName"] == "my-signing-keys"
    role = find(docs, "Role", "credward-operator")
    assert {"my-hash-key", "my-signing-keys"} <= set(role["rules"][0]["resourceNames"])


def test_pod_templates_meet_the_restricted_pod_security_standard(helm: Helm) -> None:
    for option in OPTIONS.values():
        for name, template in pod_templates(helm.template(*set_args(option))):
            spec = template["spec"]
            pod_ctx = spec["securityContext"]
            assert pod_ctx["runAsNonRoot"] is True, name
            assert pod_ctx["runAsUser"] > 0, name
            assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
            writable = {m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"] if not m.get("readOnly")}
            for c in spec["containers"]:
                ctx = c["securityContext"]
                assert ctx["allowPrivilegeEscalation"] is False, name
                assert ctx["readOnlyRootFilesystem"] is True, name
                assert ctx["capabilities"] == {"drop": ["ALL"]}, name
                assert c["resources"]["requests"], name
            assert "/tmp" in writable, name


# (values, what the refusal must say)
BAD_VALUES = [
    ({"bogus": "1"}, "additional properties 'bogus' not allowed"),
    ({"operator.replicaCount": "2"}, "additional properties 'replicaCount' not allowed"),
    ({"operator.replicas": '"two"'}, "at '/operator/replicas': got string, want integer"),
    ({"operator.replicas": "0"}, "at '/operator/replicas': minimum: got 0, want 1"),
    ({"security.replicas": "2"}, "at '/security/storage/type': value must be 'postgresql'"),
    ({"security.storage.type": '"postgresql"'}, "at '/security/storage/postgresql/dsnSecret/name': minLength"),
    ({"security.storage.type": '"mysql"'}, "value must be one of 'sqlite', 'postgresql'"),
    ({"security.issuer": '"https://tokens.example.org/"'}, "at '/security/issuer'"),
    ({"operator.resync": '"ten minutes"'}, "at '/operator/resync': 'ten minutes' does not match pattern"),
    ({"webhook.timeoutSeconds": "60"}, "at '/webhook/timeoutSeconds': maximum: got 60, want 30"),
    ({"securityContext.runAsUser": "0"}, "at '/securityContext/runAsUser': minimum: got 0, want 1"),
    ({"crds.enabled": '"yes"'}, "at '/crds/enabled': got string, want boolean"),
    ({"security.signingAlgorithm": '"HS256"'}, "value must be one of 'ES256', 'RS256', 'EdDSA'"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[next(iter(v)) for v, _ in BAD_VALUES])
def test_schema_refuses_bad_values_with_a_clear_message(helm: Helm, values: dict[str, str], message: str) -> None:
    proc = helm.run("template", "credward", str(CHART_DIR), *set_args(values), check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def gitops_values() -> dict[str, dict[str, object]]:
    """The chart values each GitOps example (examples/gitops/) hands to Helm: Flux's and Argo CD's."""
    examples = CHART_DIR.parents[1] / "examples" / "gitops"
    found: dict[str, dict[str, object]] = {}
    for doc in yaml.safe_load_all((examples / "flux" / "credward.yaml").read_text()):
        if doc and doc["kind"] == "HelmRelease":
            found["flux"] = doc["spec"]["values"]
    for doc in yaml.safe_load_all((examples / "argocd" / "credward.yaml").read_text()):
        helm_source = (doc or {}).get("spec", {}).get("source", {}).get("helm")
        if helm_source and "valuesObject" in helm_source:
            found["argocd"] = helm_source["valuesObject"]
    return found


def test_the_gitops_examples_values_pass_the_schema_and_leave_the_crds_to_kustomize(
    helm: Helm, tmp_path_factory: pytest.TempPathFactory
) -> None:
    values = gitops_values()
    assert set(values) == {"flux", "argocd"}
    for name, given in values.items():
        path = tmp_path_factory.mktemp(name) / "values.yaml"
        path.write_text(yaml.safe_dump(given))
        docs = helm.template("--values", str(path))  # an unknown key or a wrong type fails here (the schema)
        assert "CustomResourceDefinition" not in kinds(docs), name
