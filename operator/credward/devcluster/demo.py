"""``make demo``: credward end to end on a local control plane, with the operator doing the work.

1. start etcd, kube-apiserver and kube-controller-manager (built once from pinned Go modules);
2. install the CRDs, start the security service (SQLite) and the operator;
3. ``kubectl apply`` ``examples/`` (a credential and two RoleBindings) into namespace ``demo`` and
   watch the conditions turn: ``Registered`` and ``Ready`` on the credential, ``Synced`` on the bindings;
   apply ``examples/pods/`` and show what the admission webhook added to the Deployment's Pod;
4. lay the Secret out as the kubelet mounts it, mint a token through ``CLIENT_SECRET_PATH`` with
   ``credward.client``, show its claims, and let a resource server's validator allow one path and
   refuse another, saying why.

The client secret is never printed: only key names, ids, fingerprints and token claims.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from credward.client import ClientCredentialsAuthorizer, InsufficientScope, TokenValidator
from credward.devcluster.errors import ControlPlaneError
from credward.devcluster.mount import write_secret_volume
from credward.devcluster.plane import ControlPlane, free_port
from credward.devcluster.processes import operator_process, security_process
from credward.domain.secrets import fingerprint

log = logging.getLogger("credward.demo")

NAMESPACE = "demo"
AUDIENCE = "https://store.example.org"  # examples/serviceaccountcredential.yaml
OPERATOR_NAMESPACE = "credward"  # where the webhook keeps its certificates; never admitted


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _conditions(obj: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions", [])}


def wait_until_settled(plane: ControlPlane, timeout: float = 90) -> dict[str, dict[str, Any]]:
    """Poll the namespace's credentials and bindings, printing each condition change, until all are done.

    Done: every credential ``Ready=True`` and every binding ``Synced=True``, for their latest generation.
    Returns the objects by ``kind/name``.
    """
    shown: dict[str, dict[str, tuple[str, str]]] = {}
    deadline = time.monotonic() + timeout
    while True:
        listed = json.loads(plane.kubectl("get", "sac,rolebindings.credward.io", "-n", NAMESPACE, "-o", "json").stdout)
        objs = {f"{o['kind']}/{o['metadata']['name']}": o for o in listed["items"]}
        done = bool(objs)
        for key, obj in sorted(objs.items()):
            conds = _conditions(obj)
            for type_, (status, reason) in conds.items():
                if type_ in ("Registered", "Ready", "Synced") and shown.setdefault(key, {}).get(type_) != (
                    status,
                    reason,
                ):
                    print(f"  {key}: {type_}={status} ({reason})", flush=True)
                    shown[key][type_] = (status, reason)
            summary = "Ready" if obj["kind"] == "ServiceAccountCredential" else "Synced"
            current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
            done = done and current and conds.get(summary, ("", ""))[0] == "True"
        if done:
            return objs
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"the examples did not become Ready/Synced in {timeout:.0f}s: {shown}")
        time.sleep(0.3)


def secret_summary(secret: Mapping[str, Any]) -> dict[str, Any]:
    """What a person may see of a credward Secret: its keys, and the values of the non-secret ones."""
    shown = {
        key: "<hidden>" if key == "client-secret" else base64.b64decode(value).decode()
        for key, value in sorted((secret.get("data") or {}).items())
    }
    return {"name": secret["metadata"]["name"], "keys": shown}


def mount_secret(secret: Mapping[str, Any], directory: Path) -> Path:
    """The Secret's keys as files, laid out as the kubelet mounts a Secret volume (``..data`` symlink)."""
    files = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    return write_secret_volume(directory, files)


def workload_environment(client_id: str, mount: Path, base_url: str) -> dict[str, str]:
    """The three variables a Pod gets from credward (the webhook sets them; here, by hand)."""
    return {
        "CLIENT_ID": client_id,
        "CLIENT_SECRET_PATH": str(mount / "client-secret"),
        "SECURITY_BASE_URL": base_url,
    }


def resource_server_check(validator: TokenValidator, token: str, allowed: str, refused: str) -> None:
    """What a storage service does per request: verify the token, then authorize (verb, path)."""
    access = validator.verify(token)
    verb, path = allowed.split(" ", 1)
    grant = access.require(verb, path)
    print(f"  {verb} {path}: allowed by scope {grant.scope}")
    verb, path = refused.split(" ", 1)
    try:
        access.require(verb, path)
    except InsufficientScope as exc:
        print(f"  {verb} {path}: refused ({exc.check.value}): {exc.reason}")
    else:
        raise ControlPlaneError(f"the validator allowed {verb} {path}, which no example grants")


def injected_pod(plane: ControlPlane, repo: Path) -> dict[str, Any]:
    """Apply ``examples/pods/`` and return what the webhook added to the Deployment's first Pod, as stored."""
    plane.kubectl("apply", "-n", NAMESPACE, "-f", str(repo / "examples" / "pods"))
    deadline = time.monotonic() + 60
    while True:  # the Deployment and ReplicaSet controllers create it (it stays Pending: there are no nodes)
        items = json.loads(plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app=builder", "-o", "json").stdout)
        if items["items"]:
            break
        if time.monotonic() > deadline:
            events = plane.kubectl("get", "events", "-n", NAMESPACE, check=False).stdout
            raise ControlPlaneError(f"the example Deployment made no pod within 60s; events:\n{events}")
        time.sleep(0.5)
    spec = items["items"][0]["spec"]
    container = spec["containers"][0]
    return {
        "volumes": [v for v in spec.get("volumes", []) if v["name"].startswith("credward-")],
        "containers": [
            {
                "name": container["name"],
                "env": container.get("env", []),
                "volumeMounts": [m for m in container.get("volumeMounts", []) if m["name"].startswith("credward-")],
            }
        ],
    }


def run_demo(state: Path, repo: Path, *, keep: bool, wait_forever: Callable[[], None]) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    state = state.resolve()
    _step("starting a local control plane (etcd, kube-apiserver, kube-controller-manager)")
    with ControlPlane(state / "controlplane") as plane:
        log.info("control plane ready at %s in %.1fs", plane.server, time.monotonic() - started)
        plane.install_crds(repo / "crds")
        print(plane.kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=credward").stdout)

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        _step(f"starting the security service at {base_url} (SQLite) and the operator")
        security, admin_token_file, hash_key_file = security_process(state, port)
        plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        webhook_port = free_port()
        operator = operator_process(
            plane,
            security_base_url=base_url,
            hash_key_file=hash_key_file,
            token_file=admin_token_file,
            log_path=state / "logs" / "operator.log",
            extra_args=[f"--webhook-port={webhook_port}"],  # no Service locally: the API server calls 127.0.0.1
            env={
                "CREDWARD_WEBHOOK_BIND": "127.0.0.1",
                "CREDWARD_WEBHOOK_URL": f"https://127.0.0.1:{webhook_port}",
                "CREDWARD_WEBHOOK_NAMESPACE": OPERATOR_NAMESPACE,
            },
        )
        with security, operator:
            _step(f"kubectl apply -f examples/ in namespace {NAMESPACE}")
            plane.kubectl("create", "namespace", NAMESPACE, check=False)
            print(plane.kubectl("apply", "-n", NAMESPACE, "-f", str(repo / "examples")).stdout)
            _step("the operator registers the account and syncs both RoleBindings with the security service")
            objs = wait_until_settled(plane)
            print(plane.kubectl("get", "sac,rolebindings.credward.io", "-n", NAMESPACE).stdout)
            name, obj = next((k.split("/", 1)[1], o) for k, o in objs.items() if k.startswith("ServiceAccount"))
            _step(f"status of ServiceAccountCredential {NAMESPACE}/{name}")
            print(json.dumps(obj["status"], indent=2))
            secret = json.loads(
                plane.kubectl("get", "secret", obj["status"]["secretName"], "-n", NAMESPACE, "-o", "json").stdout
            )
            _step(f"Secret {secret['metadata']['name']} (the client secret's value is never shown)")
            print(json.dumps(secret_summary(secret), indent=2))
            _step("examples/pods/: the Deployment's Pod as stored, with what the admission webhook added")
            print(json.dumps(injected_pod(plane, repo), indent=2))

            mount = mount_secret(secret, state / "mount" / name)
            env = workload_environment(obj["status"]["clientId"], mount, base_url)
            _step("mounted as the kubelet mounts a Secret volume; the workload's environment:")
            for key, value in env.items():
                print(f"  {key}={value}")
            value = (mount / "client-secret").read_text()
            print(f"  client-secret fingerprint {fingerprint(value)}, {len(value)} characters")

            _step("the workload: credward.client trades CLIENT_SECRET_PATH for a token (client-credentials grant)")
            with ClientCredentialsAuthorizer.from_env(env) as authorizer:
                token = authorizer.get_token()
            validator = TokenValidator(base_url, audience=AUDIENCE)
            access = validator.verify(token)
            print(f"  verified against {base_url}/.well-known/openid-configuration -> jwks_uri; claims:")
            print(json.dumps(dict(access.claims), indent=2))

            _step("a resource server authorizes requests with the validator")
            resource_server_check(
                validator, token, allowed="read /store/artifacts/app-1.2.tar", refused="write /store/artifacts/x"
            )
            validator.close()

            log.info("demo finished in %.1fs", time.monotonic() - started)
            if keep:
                print(f"\nEverything keeps running. export KUBECONFIG={plane.kubeconfig}  (Ctrl-C stops it)")
                wait_forever()
    return 0
