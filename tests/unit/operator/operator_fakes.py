"""In-memory stand-ins for the operator's two clients, injected into the controller (unit tier: no servers).

They hold objects as the API server and the service would, and can be told to fail with exactly the errors
the real edges (``credward.operator.kube``, ``credward.operator.service``) raise.
"""

from __future__ import annotations

import copy
from typing import Any

from credward.api.admin import AccountIn, AccountView, RoleMappingsIn, ServiceInfo
from credward.domain.credential import Event
from credward.domain.secrets import hash_key_id

HASH_KEY = b"h" * 32


class FakeKube:
    def __init__(self) -> None:
        self.credentials: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.bindings: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, Event]] = []
        self.writes: list[str] = []
        self.fail: dict[str, BaseException] = {}  # method name -> exception raised (every time)

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    async def get_credential(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail("get_credential")
        obj = self.credentials.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail("get_secret")
        obj = self.secrets.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def list_bindings(self, namespace: str, account: str | None = None) -> list[dict[str, Any]]:
        self._maybe_fail("list_bindings")
        found = [b for (ns, _), b in self.bindings.items() if ns == namespace]
        return [copy.deepcopy(b) for b in found if account is None or b["spec"].get("serviceAccount") == account]

    async def apply_secret(self, manifest: dict[str, Any]) -> None:
        self._maybe_fail("apply_secret")
        meta = manifest["metadata"]
        self.secrets[(meta["namespace"], meta["name"])] = copy.deepcopy(manifest)
        self.writes.append(f"secret {meta['name']}")

    async def apply_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._maybe_fail("apply_credential_status")
        self.credentials[(namespace, name)]["status"] = copy.deepcopy(status)
        self.writes.append(f"status {name}")

    async def apply_binding_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._maybe_fail("apply_binding_status")
        self.bindings[(namespace, name)]["status"] = copy.deepcopy(status)
        self.writes.append(f"binding-status {name}")

    async def add_finalizer(self, body: dict[str, Any]) -> None:
        self._maybe_fail("add_finalizer")
        meta = self.credentials[(body["metadata"]["namespace"], body["metadata"]["name"])]["metadata"]
        meta.setdefault("finalizers", []).append("credward.io/account-cleanup")
        self.writes.append("finalizer+")

    async def remove_finalizer(self, body: dict[str, Any]) -> None:
        self._maybe_fail("remove_finalizer")
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.credentials.pop(key, None)  # the last finalizer gone: the API server deletes the object
        self.writes.append("finalizer-")

    async def post_event(self, involved: dict[str, Any], event: Event) -> None:
        self.events.append((involved["metadata"]["name"], event))


class FakeService:
    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.store_id = "store-1"
        self.key_id = hash_key_id(HASH_KEY)
        self.max_ttl = 3600
        self.fail: dict[str, BaseException] = {}
        self.calls: list[str] = []

    def _maybe_fail(self, method: str) -> None:
        self.calls.append(method)
        if method in self.fail:
            raise self.fail[method]

    def _view(self, client_id: str) -> AccountView:
        doc = self.accounts[client_id]
        return AccountView.model_validate(
            {
                **doc,
                "clientId": client_id,
                "effectiveTokenTTLSeconds": min(doc["tokenTTLSeconds"], self.max_ttl),
                "secrets": [{"id": s["id"]} for s in doc["secrets"]],
            }
        )

    async def info(self) -> ServiceInfo:
        self._maybe_fail("info")
        return ServiceInfo.model_validate(
            {
                "storeId": self.store_id,
                "accounts": len(self.accounts),
                "hashKeyId": self.key_id,
                "maxTokenTTLSeconds": self.max_ttl,
            }
        )

    async def get_account(self, client_id: str) -> AccountView | None:
        self._maybe_fail("get_account")
        return self._view(client_id) if client_id in self.accounts else None

    async def put_account(self, client_id: str, account: AccountIn) -> AccountView:
        self._maybe_fail("put_account")
        mappings = self.accounts.get(client_id, {}).get("roleMappings", [])
        self.accounts[client_id] = {**account.model_dump(by_alias=True, mode="json"), "roleMappings": mappings}
        return self._view(client_id)

    async def put_role_mappings(self, client_id: str, mappings: RoleMappingsIn) -> AccountView | None:
        self._maybe_fail("put_role_mappings")
        if client_id not in self.accounts:
            return None
        self.accounts[client_id]["roleMappings"] = mappings.model_dump(by_alias=True, mode="json")["mappings"]
        return self._view(client_id)

    async def revoke(self, client_id: str) -> bool:
        self._maybe_fail("revoke")
        if client_id not in self.accounts:
            return False
        self.accounts[client_id]["status"] = "revoked"
        return True

    async def delete_account(self, client_id: str) -> None:
        self._maybe_fail("delete_account")
        self.accounts.pop(client_id, None)


def credential(name: str, namespace: str = "ci", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "credward.io/v1alpha1",
        "kind": "ServiceAccountCredential",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-22T12:00:00Z",
        },
        "spec": {"displayName": name, **spec},
    }


def binding(name: str, account: str, namespace: str = "ci", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "credward.io/v1alpha1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": {"serviceAccount": account, **spec},
    }
