"""The Secrets the operator and the security service share, bootstrapped by the operator (never by a chart template).

``CREDWARD_HASH_KEY_SECRET`` (data key ``hash-key``) and
``CREDWARD_SIGNING_KEYS_SECRET`` (``current.pem``, ``next.pem``,
``previous.pem``: the service's keys-directory layout, so the service mounts
it as its keys directory) live in ``CREDWARD_POD_NAMESPACE``. Each is created
with fresh random keys only if absent (a create, never an update: a replica
that loses the race reads the winner's), and a Secret someone supplied is
never overwritten. An existing one that is malformed stops the start with a
:class:`SettingsError` naming the Secret and the data key, never the value.
Logs name keys by public ids only: the hash key by ``hash_key_id``, signing
keys by ``kid``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from credward.api import GROUP
from credward.domain.jwk import SigningAlgorithm, generate_key, key_to_pem, kid_of
from credward.domain.secrets import hash_key_id, parse_hash_key
from credward.domain.signing_keys import ANNOTATION_MANAGED, STATE_ANNOTATIONS, KeysState, initial, read_keys
from credward.errors import Gone, HashKeyError, KeyLoadError, SettingsError
from credward.operator.kube import edge

log = logging.getLogger(__name__)

KEY_HASH_KEY = "hash-key"
ANNOTATION_CREATED_BY = f"{GROUP}/created-by"  # the operator created this Secret (no one supplied it)
CREATED_BY = "credward-operator"


class SecretsApi(Protocol):
    """The CoreV1Api calls made on the shared Secrets."""

    async def read_namespaced_secret(self, name: str, namespace: str, **kwargs: Any) -> Any: ...
    async def create_namespaced_secret(self, namespace: str, body: Any, **kwargs: Any) -> Any: ...
    async def replace_namespaced_secret(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any: ...


def decode_data(obj: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's ``data`` as bytes; a value that is not base64 reads as empty (and is refused by its parser)."""
    out: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            out[key] = b""
    return out


def _encode(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


class NamespaceSecrets:
    """Read, create and replace Secrets in one namespace, every client error sorted into credward's tree."""

    def __init__(self, core: SecretsApi, namespace: str, serialize: Any) -> None:
        self._core = core
        self.namespace = namespace
        self._serialize = serialize

    @classmethod
    def of(cls, api: client.ApiClient, namespace: str) -> NamespaceSecrets:
        return cls(client.CoreV1Api(api), namespace, api.sanitize_for_serialization)

    def describe(self, name: str) -> str:
        return f"Secret {self.namespace}/{name}"

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            async with edge(f"reading {self.describe(name)}"):
                obj = await self._core.read_namespaced_secret(name, self.namespace)
        except Gone:
            return None
        body: dict[str, Any] = self._serialize(obj)
        return body

    async def create(self, name: str, data: Mapping[str, bytes], annotations: Mapping[str, str]) -> bool:
        """Create the Secret; False if it already exists (someone else created it first)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": self.namespace, "annotations": dict(annotations)},
            "data": _encode(data),
        }
        async with edge(f"creating {self.describe(name)}", _texts(data)):
            try:
                await self._core.create_namespaced_secret(self.namespace, body)
            except ApiException as exc:
                if exc.status == 409:  # AlreadyExists
                    return False
                raise
        return True

    async def replace(self, obj: Mapping[str, Any], data: Mapping[str, bytes], annotations: Mapping[str, str]) -> None:
        """Replace data and credward's state annotations; the read ``resourceVersion`` makes a lost race a 409."""
        meta = dict(obj["metadata"])
        kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in STATE_ANNOTATIONS}
        meta["annotations"] = {**kept, **annotations}
        body = {**obj, "metadata": meta, "data": _encode(data)}
        async with edge(f"updating {self.describe(meta['name'])}", _texts(data)):
            await self._core.replace_namespaced_secret(meta["name"], self.namespace, body)


def _texts(data: Mapping[str, bytes]) -> Collection[str]:
    """Values an error message must never carry (the API server may echo a body)."""
    texts = [v.decode(errors="replace") for v in data.values()]
    return [*texts, *_encode(data).values()]


def _now() -> datetime:
    return datetime.now(UTC)


async def hash_key_from_secret(store: NamespaceSecrets, name: str) -> bytes:
    """The secret-hash key of ``name`` (data key ``hash-key``), created with 32 random bytes (hex) if absent."""
    where = f"{store.describe(name)} (CREDWARD_HASH_KEY_SECRET)"
    obj = await store.get(name)
    if obj is None:
        fresh = secrets.token_hex(32).encode()  # the same form as the service's dev mode writes
        if await store.create(name, {KEY_HASH_KEY: fresh}, {ANNOTATION_CREATED_BY: CREATED_BY}):
            log.info("created %s with a new secret-hash key (key id %s)", where, hash_key_id(fresh))
            return fresh
        obj = await store.get(name)  # another replica created it first: use theirs
        if obj is None:
            raise SettingsError(f"{where} was created by someone else and is gone again; restarting")
    raw = decode_data(obj).get(KEY_HASH_KEY)
    if raw is None:
        raise SettingsError(f"{where} has no data key {KEY_HASH_KEY!r}")
    try:
        key = parse_hash_key(raw)
    except HashKeyError as exc:
        raise SettingsError(f"{where}, data key {KEY_HASH_KEY!r}: {exc}") from None
    log.info("secret-hash key from %s (key id %s)", where, hash_key_id(key))
    return key


def new_signing_keys(alg: SigningAlgorithm, now: datetime) -> KeysState:
    key = generate_key(alg)
    return initial(key_to_pem(key), kid_of(key), now)


async def ensure_signing_keys(store: NamespaceSecrets, name: str, alg: SigningAlgorithm) -> KeysState:
    """The signing keys of ``name``, created (one ``current.pem``, managed by the operator) if absent."""
    where = f"{store.describe(name)} (CREDWARD_SIGNING_KEYS_SECRET)"
    obj = await store.get(name)
    if obj is None:
        state = new_signing_keys(alg, _now())
        annotations = {**state.annotations(), ANNOTATION_MANAGED: "true", ANNOTATION_CREATED_BY: CREATED_BY}
        if await store.create(name, state.data(), annotations):
            log.info("created %s with a new %s signing key: %s", where, alg.value, state.describe())
            return state
        obj = await store.get(name)
        if obj is None:
            raise SettingsError(f"{where} was created by someone else and is gone again; restarting")
    annotations = obj["metadata"].get("annotations") or {}
    try:
        state = read_keys(decode_data(obj), annotations, alg)
    except KeyLoadError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    managed = annotations.get(ANNOTATION_MANAGED) == "true"
    log.info(
        "signing keys from %s: %s (%s)",
        where,
        state.describe(),
        "rotated by the operator"
        if managed
        else f"supplied: not rotated, annotate {ANNOTATION_MANAGED}=true to opt in",
    )
    return state
