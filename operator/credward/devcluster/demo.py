"""``make demo``: credward end to end on a local control plane.

1. start etcd, kube-apiserver and kube-controller-manager (built once from pinned Go modules);
2. install the CRDs, start the security service and the operator;
3. apply ``examples/`` into namespace ``demo`` and show the credential's status and Secret keys;
   apply ``examples/pods/`` and show what the webhook added to the Deployment's Pod;
4. lay the Secret out as the kubelet mounts it, register the account with the security service,
   and trade the mounted secret for a signed JWT, verified against the published keys.

The client secret is never printed: only key names, ids, fingerprints and token claims.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

from credward.devcluster.errors import ControlPlaneError
from credward.devcluster.plane import ControlPlane, free_port
from credward.devcluster.processes import OPERATOR_USER, ChildProcess
from credward.domain.secrets import fingerprint, hash_secret

log = logging.getLogger("credward.demo")

NAMESPACE = "demo"
OPERATOR_NAMESPACE = "credward"  # where the webhook keeps its certificates; never admitted


def security_process(state: Path, port: int) -> tuple[ChildProcess, Path, Path]:
    """``credward security serve`` in dev mode, SQLite store, admin API behind a bearer token file."""
    admin_token = state / "security" / "admin-token"
    hash_key = state / "security" / "hash.key"
    admin_token.parent.mkdir(parents=True, exist_ok=True)
    if not admin_token.exists():
        admin_token.write_text(secrets.token_urlsafe(32))
        admin_token.chmod(0o600)
    proc = ChildProcess(
        "credward security",
        [
            "security",
            "serve",
            f"--issuer=http://127.0.0.1:{port}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--store-url=sqlite:///{state / 'security' / 'credward.db'}",
            f"--keys-dir={state / 'security' / 'keys'}",
            f"--hash-key-file={hash_key}",
            "--dev-mode=true",
            "--admin-auth=bearer-file",
            f"--admin-token-file={admin_token}",
        ],
        state / "logs" / "security.log",
        f"http://127.0.0.1:{port}/readyz",
    )
    return proc, admin_token, hash_key


def operator_with_webhook(plane: ControlPlane, security_base_url: str, log_path: Path) -> ChildProcess:
    """``credward operator run`` serving its admission webhook at https://127.0.0.1:PORT (no Service locally)."""
    health, port = free_port(), free_port()
    return ChildProcess(
        "credward operator",
        ["operator", "run", "--all-namespaces", f"--liveness-port={health}", f"--webhook-port={port}"],
        log_path,
        f"http://127.0.0.1:{health}/healthz",
        env={
            "KUBECONFIG": str(plane.user_kubeconfig(OPERATOR_USER, ["system:masters"])),
            "CREDWARD_SECURITY_BASE_URL": security_base_url,
            "CREDWARD_WEBHOOK_BIND": "127.0.0.1",
            "CREDWARD_WEBHOOK_URL": f"https://127.0.0.1:{port}",
            "CREDWARD_WEBHOOK_NAMESPACE": OPERATOR_NAMESPACE,
        },
    )


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


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _wait_ready(plane: ControlPlane, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = plane.kubectl("get", "sac", name, "-n", NAMESPACE, "-o", "json", check=False)
        if proc.returncode == 0:
            obj: dict[str, Any] = json.loads(proc.stdout)
            conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
            if conds.get("Ready", {}).get("status") == "True":
                return obj
        time.sleep(0.3)
    raise ControlPlaneError(f"ServiceAccountCredential {NAMESPACE}/{name} did not become Ready in {timeout:.0f}s")


def secret_summary(secret: dict[str, Any]) -> dict[str, Any]:
    """What a person may see of a credward Secret: its keys, and the values of the non-secret ones."""
    shown = {
        key: "<hidden>" if key == "client-secret" else base64.b64decode(value).decode()
        for key, value in sorted((secret.get("data") or {}).items())
    }
    return {"name": secret["metadata"]["name"], "keys": shown}


def mount_secret(secret: dict[str, Any], directory: Path) -> Path:
    """Write each key to its own file, as a Secret volume appears in a Pod."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in (secret.get("data") or {}).items():
        path = directory / key
        path.write_bytes(base64.b64decode(value))
        path.chmod(0o400)
    return directory


def register_account(
    base_url: str,
    admin_token: str,
    hash_key: bytes,
    obj: dict[str, Any],
    bindings: list[dict[str, Any]],
    mount: Path,
) -> None:
    """Push the account, its secret hash and its RoleBindings to the security service's admin API."""
    status, spec = obj["status"], obj["spec"]
    client_id = status["clientId"]
    value = (mount / "client-secret").read_text()
    body = {
        "identity": status["identity"],
        "displayName": spec["displayName"],
        "namespace": obj["metadata"]["namespace"],
        "name": obj["metadata"]["name"],
        "audiences": spec.get("audiences", []),
        "groups": spec.get("groups", []),
        "secrets": [{"id": s["id"], "hash": hash_secret(hash_key, value)} for s in status["activeSecrets"]],
    }
    headers = {"Authorization": f"Bearer {admin_token}"}
    url = f"{base_url}/v1/admin/accounts/{client_id}"
    httpx.put(url, json=body, headers=headers).raise_for_status()
    mappings = [
        {
            "name": b["metadata"]["name"],
            "roles": b["spec"].get("roles", []),
            "permissions": b["spec"].get("permissions", []),
        }
        for b in bindings
        if b["spec"]["serviceAccount"] == obj["metadata"]["name"]
    ]
    httpx.put(f"{url}/role-mappings", json={"mappings": mappings}, headers=headers).raise_for_status()


def mint_token(mount: Path) -> tuple[str, dict[str, Any]]:
    """What a workload does: read the mounted files, run the client-credentials grant."""
    client_id = (mount / "client-id").read_text()
    token_url = (mount / "token-url").read_text()
    resp = httpx.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=(client_id, (mount / "client-secret").read_text()),
    )
    if resp.status_code != 200:
        raise ControlPlaneError(f"token request failed: HTTP {resp.status_code} {resp.text}")
    body: dict[str, Any] = resp.json()
    return body["access_token"], body


def verify(token: str, issuer: str) -> dict[str, Any]:
    """Verify with PyJWT against the published JWKS, as a resource server would."""
    config = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
    key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=config.get("id_token_signing_alg_values_supported", ["ES256"]),
        issuer=issuer,
        options={"verify_aud": False},
    )
    return claims


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
        _step(f"starting the security service at {base_url} and the operator")
        security, admin_token_file, hash_key_file = security_process(state, port)
        plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        operator = operator_with_webhook(plane, base_url, state / "logs" / "operator.log")
        with security, operator:
            _step(f"applying examples/ in namespace {NAMESPACE}")
            plane.kubectl("create", "namespace", NAMESPACE, check=False)
            print(plane.kubectl("apply", "-n", NAMESPACE, "-f", str(repo / "examples")).stdout)
            examples = [
                d["metadata"]["name"]
                for d in json.loads(plane.kubectl("get", "sac", "-n", NAMESPACE, "-o", "json").stdout)["items"]
            ]
            objs = {name: _wait_ready(plane, name) for name in examples}
            print(plane.kubectl("get", "sac,rolebindings.credward.io", "-n", NAMESPACE).stdout)
            name, obj = next(iter(objs.items()))
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
            _step(f"mounted as a Pod would see it: CLIENT_SECRET_PATH={mount / 'client-secret'}")
            value = (mount / "client-secret").read_text()
            print(f"  client-secret fingerprint {fingerprint(value)}, {len(value)} characters")

            bindings = json.loads(
                plane.kubectl("get", "rolebindings.credward.io", "-n", NAMESPACE, "-o", "json").stdout
            )
            _step("registering the account and its RoleBindings with the security service")
            register_account(
                base_url,
                admin_token_file.read_text().strip(),
                hash_key_file.read_bytes().strip(),
                obj,
                bindings["items"],
                mount,
            )
            _step("trading the mounted secret for a token (OAuth2 client-credentials grant)")
            token, body = mint_token(mount)
            claims = verify(token, base_url)
            print(f"  token_type={body['token_type']} expires_in={body['expires_in']} scope={body.get('scope', '')!r}")
            print(f"  verified against {base_url}/.well-known/openid-configuration → jwks_uri; claims:")
            print(json.dumps(claims, indent=2))

            log.info("demo finished in %.1fs", time.monotonic() - started)
            if keep:
                print(f"\nEverything keeps running. export KUBECONFIG={plane.kubeconfig}  (Ctrl-C stops it)")
                wait_forever()
    return 0
