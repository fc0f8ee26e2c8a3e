"""The controller's reads served from the watch streams kopf already receives, instead of a GET per reconcile.

kopf lists and watches credentials, owned Secrets and RoleBindings anyway; :class:`WatchCache`
keeps the latest version of each (slimmed: no ``managedFields`` beyond what ownership needs)
and :class:`CachedKube` answers :class:`~credward.operator.controller.KubeApi` reads from it,
passing writes through to :class:`~credward.operator.kube.Kube` and keeping their answers.

Why a stale read can only delay, never cause a wrong write:

- no reconcile runs before the cache is complete: it starts from one listing per kind made
  before the watches start (no read per object), and opens once the watches have delivered
  every object of that listing (an object deleted in between is dropped after a while);
- an older version never replaces a newer one (resourceVersions compared, as integers);
- a Secret the cache does not hold is read with a GET: foreign or unlabelled Secrets are not
  in the watch's label selection, and a Secret credward does not own must never be overwritten;
- a Secret written on the strength of a cached version carries that version as a precondition
  (``metadata.resourceVersion``), so a change the cache has not seen yet makes the apply fail
  with 409 (retried) instead of being overwritten; finalizer patches carry one already;
- everything else (status, binding statuses, role mappings) is level-based: the next event for
  the newer version reconciles again.

Own echoes: the watch event for an object version that credward's own write produced, when
nothing but that write changed since the version the reconcile read, brings nothing new, so
it triggers no reconcile (:meth:`WatchCache.is_echo`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from credward.domain.credential import Event
from credward.operator.kube import Kube

Key = tuple[str, str]
CREDENTIALS, SECRETS, BINDINGS = "credentials", "secrets", "bindings"
_VOLATILE = frozenset({"resourceVersion", "managedFields"})


def _version(obj: Mapping[str, Any]) -> int | None:
    text = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(text) if text else None
    except ValueError:
        return None  # opaque to this client: every version counts as new


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


def _slim_fields(entries: Any) -> list[dict[str, Any]]:
    """Of ``managedFields``: who applied which labels and annotations (what Secret ownership reads), nothing else."""
    slim = []
    for entry in entries or ():
        meta = (entry.get("fieldsV1") or {}).get("f:metadata") or {}
        kept = {k: meta[k] for k in ("f:labels", "f:annotations") if k in meta}
        slim.append(
            {"manager": entry.get("manager"), "operation": entry.get("operation"), "fieldsV1": {"f:metadata": kept}}
        )
    return slim


def slim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy without what no reconcile reads (most of ``managedFields``): memory at 10,000 objects."""
    meta = dict(obj.get("metadata") or {})
    fields = meta.pop("managedFields", None)
    if kind == SECRETS and fields:
        meta["managedFields"] = _slim_fields(fields)
    out = {k: v for k, v in obj.items() if k != "metadata"}
    out["metadata"] = meta
    return out


def _inputs(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reconcile decides on, besides the status credward writes itself."""
    meta = obj.get("metadata") or {}
    return (
        {k: v for k, v in meta.items() if k not in _VOLATILE},
        obj.get("spec"),
        obj.get("data"),
        obj.get("type"),
    )


class WatchCache:
    """The latest known version of every watched object, by kind and (namespace, name)."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {CREDENTIALS: {}, SECRETS: {}, BINDINGS: {}}
        # Objects the start-up listing found that the watches have not delivered yet (see fill()).
        self._pending: dict[str, set[Key]] = {CREDENTIALS: set(), SECRETS: set(), BINDINGS: set()}
        self.complete = asyncio.Event()
        self._by_account: dict[Key, set[str]] = {}  # (namespace, serviceAccount) -> binding names
        self._echoes: dict[tuple[str, Key], tuple[int, int]] = {}  # versions only credward's own writes made
        self._deleted: dict[tuple[str, Key], int] = {}  # the version each deletion was seen at

    def fill(self, kind: str, objects: list[dict[str, Any]]) -> None:
        """Start with a listing made before the watches start: every object that existed then is held.

        The cache counts as complete once the watches (whose own listing comes a moment later) have
        delivered each of them: from then on their versions are at least as new as any listing's.
        """
        for obj in objects:
            self.put(kind, obj)
            self._pending[kind].add(_key(obj))

    def seen(self, kind: str, obj: Mapping[str, Any]) -> None:
        """The watch delivered ``obj`` (any event); complete when nothing from the listing is still awaited."""
        pending = self._pending[kind]
        if pending:
            pending.discard(_key(obj))
        if not self.complete.is_set() and not any(self._pending.values()):
            self.complete.set()

    def give_up_waiting(self) -> list[tuple[str, Key]]:
        """Drop what the listing found but the watches never delivered (deleted in between); complete now."""
        gone = [(kind, key) for kind, keys in self._pending.items() for key in keys]
        for kind, key in gone:
            held = self._objects[kind].get(key)
            if held is not None:
                self.delete(kind, held)
            self._pending[kind].discard(key)
        self.complete.set()
        return gone

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects[kind].get((namespace, name))

    def bindings_of(self, namespace: str, account: str) -> list[dict[str, Any]]:
        store = self._objects[BINDINGS]
        names = self._by_account.get((namespace, account)) or ()
        return [store[(namespace, n)] for n in sorted(names) if (namespace, n) in store]

    def __len__(self) -> int:
        return sum(len(objects) for objects in self._objects.values())

    def put(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Keep ``obj`` unless the cache already holds a newer version of it, or saw it deleted since."""
        key = _key(obj)
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.delete(kind, obj)  # the answer to removing the last finalizer: the object is gone
            return
        store = self._objects[kind]
        held = store.get(key)
        new, old = _version(obj), _version(held) if held is not None else None
        if held is not None and new is not None and old is not None and new < old:
            return
        gone = self._deleted.get((kind, key))
        if gone is not None and new is not None and new <= gone:
            return  # an answer or event older than the deletion the watch already told
        self._deleted.pop((kind, key), None)
        store[key] = slim(kind, obj)
        if kind == BINDINGS:
            self._index_binding(key, held, obj)

    def delete(self, kind: str, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        held = self._objects[kind].get(key)
        new, old = _version(obj), _version(held) if held is not None else None
        if held is not None and new is not None and old is not None and new < old:
            return  # recreated since: the newer one stays
        self._objects[kind].pop(key, None)
        self._echoes.pop((kind, key), None)
        if new is not None:
            self._deleted[(kind, key)] = max(new, self._deleted.get((kind, key), 0))
        if kind == BINDINGS and held is not None:
            self._index_binding(key, held, None)

    def _index_binding(self, key: Key, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        namespace, name = key
        before = str(((old or {}).get("spec") or {}).get("serviceAccount") or "")
        after = str(((new or {}).get("spec") or {}).get("serviceAccount") or "")
        if before == after and new is not None:
            self._by_account.setdefault((namespace, after), set()).add(name)
            return
        names = self._by_account.get((namespace, before))
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_account[(namespace, before)]
        if new is not None:
            self._by_account.setdefault((namespace, after), set()).add(name)

    def wrote(
        self, kind: str, served: Mapping[str, Any] | None, answer: Mapping[str, Any], *, only_ours: bool = False
    ) -> None:
        """Keep the API server's answer to credward's own write; its echo is quiet if only that write changed it.

        ``only_ours``: the write was conditional on the version served (or created the object), so
        nothing else can be in the answer; otherwise the answer must match what was served, status aside.
        """
        self.put(kind, answer)
        version = _version(answer)
        if version is None:
            return
        key = (kind, _key(answer))
        if not (only_ours or (served is not None and _inputs(served) == _inputs(answer))):
            self._echoes.pop(key, None)
            return
        # Writes made one on the answer of the other (finalizer, then status) chain: every version between is ours.
        chain = self._echoes.get(key)
        served_version = _version(served) if served is not None else None
        low = chain[0] if chain is not None and served_version is not None and chain[1] == served_version else version
        self._echoes[key] = (low, version)

    def is_echo(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """True for the watch event of a version only credward's own write made (no reconcile needed)."""
        version = _version(obj)
        chain = self._echoes.get((kind, _key(obj)))
        return version is not None and chain is not None and chain[0] <= version <= chain[1]


class CachedKube:
    """:class:`~credward.operator.controller.KubeApi` with reads from a :class:`WatchCache`, writes through ``kube``."""

    def __init__(self, kube: Kube, cache: WatchCache) -> None:
        self._kube = kube
        self.cache = cache
        self._served: dict[tuple[str, Key], dict[str, Any] | None] = {}  # what the last read of each object saw

    def _serve(self, kind: str, key: Key, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        self._served[(kind, key)] = obj
        return obj

    async def get_credential(self, namespace: str, name: str) -> dict[str, Any] | None:
        # Not held means not there: the listing was complete before the first reconcile, and a
        # create the watch has not delivered yet brings its own event (and reconcile) right after.
        return self._serve(CREDENTIALS, (namespace, name), self.cache.get(CREDENTIALS, namespace, name))

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        held = self.cache.get(SECRETS, namespace, name)
        if held is None:
            # Perhaps a Secret outside the watch's label selection (someone else's, or a label removed).
            held = await self._kube.get_secret(namespace, name)
        return self._serve(SECRETS, (namespace, name), held)

    async def list_bindings(self, namespace: str, account: str | None = None) -> list[dict[str, Any]]:
        if account is None:
            return await self._kube.list_bindings(namespace)
        found = self.cache.bindings_of(namespace, account)
        for obj in found:
            self._served[(BINDINGS, _key(obj))] = obj
        return found

    async def apply_secret(self, manifest: dict[str, Any]) -> None:
        key = _key(manifest)
        served = self._served.pop((SECRETS, key), None)
        if served is not None and served["metadata"].get("resourceVersion"):
            # Decided on that version: a newer one the cache has not seen makes this a 409, not an overwrite.
            meta = {**manifest["metadata"], "resourceVersion": served["metadata"]["resourceVersion"]}
            manifest = {**manifest, "metadata": meta}
        answer = await self._kube.apply_secret(manifest)
        self.cache.wrote(SECRETS, served, answer, only_ours=True)

    async def apply_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        answer = await self._kube.apply_credential_status(namespace, name, status)
        if answer is not None:
            self.cache.wrote(CREDENTIALS, self._served.get((CREDENTIALS, (namespace, name))), answer)

    async def apply_binding_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        answer = await self._kube.apply_binding_status(namespace, name, status)
        if answer is not None:
            self.cache.wrote(BINDINGS, self._served.pop((BINDINGS, (namespace, name)), None), answer)

    async def add_finalizer(self, body: dict[str, Any]) -> None:
        answer = await self._kube.add_finalizer(body)
        if answer is not None:  # conditional on the version read (a merge patch with its resourceVersion)
            self.cache.wrote(CREDENTIALS, body, answer, only_ours=True)
            self._served[(CREDENTIALS, _key(answer))] = answer  # the reconcile goes on with the finalizer in place

    async def remove_finalizer(self, body: dict[str, Any]) -> None:
        answer = await self._kube.remove_finalizer(body)
        if answer is not None:
            self.cache.put(CREDENTIALS, answer)

    async def post_event(self, involved: dict[str, Any], event: Event) -> None:
        await self._kube.post_event(involved, event)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what the reads of a finished key remembered (memory only; the cache keeps the objects)."""
        for kind in (CREDENTIALS, SECRETS):
            self._served.pop((kind, (namespace, name)), None)
