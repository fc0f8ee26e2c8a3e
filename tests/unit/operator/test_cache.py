"""The watch cache: newest version wins, own echoes are quiet, unheld Secrets are read, applies are conditional."""

from __future__ import annotations

from typing import Any

from credward.domain.credential import Event
from credward.operator.cache import BINDINGS, CREDENTIALS, SECRETS, CachedKube, WatchCache


def obj(name: str, version: int, **rest: Any) -> dict[str, Any]:
    meta = {"namespace": "ns", "name": name, "resourceVersion": str(version), "generation": 1}
    meta.update(rest.pop("metadata", {}))
    return {"metadata": meta, **rest}


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache = WatchCache()
    cache.put(CREDENTIALS, obj("a", 5, spec={"v": "new"}))
    cache.put(CREDENTIALS, obj("a", 4, spec={"v": "old"}))
    assert cache.get(CREDENTIALS, "ns", "a") == obj("a", 5, spec={"v": "new"})
    cache.delete(CREDENTIALS, obj("a", 3))  # a deletion older than what is held: it was recreated since
    assert cache.get(CREDENTIALS, "ns", "a") is not None
    cache.delete(CREDENTIALS, obj("a", 6))
    assert cache.get(CREDENTIALS, "ns", "a") is None


def test_managed_fields_are_dropped_but_secret_ownership_is_kept() -> None:
    cache = WatchCache()
    fields = [
        {
            "manager": "credward-operator",
            "operation": "Apply",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}, "f:ownerReferences": {}}, "f:data": {"f:x": {}}},
        }
    ]
    cache.put(SECRETS, obj("s", 1, metadata={"managedFields": fields}, data={"x": "eA=="}))
    cache.put(CREDENTIALS, obj("c", 1, metadata={"managedFields": fields}))
    held = cache.get(SECRETS, "ns", "s")
    assert held is not None
    assert held["metadata"]["managedFields"] == [
        {"manager": "credward-operator", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}}
    ]
    assert "managedFields" not in (cache.get(CREDENTIALS, "ns", "c") or {})["metadata"]


def test_bindings_are_found_by_the_account_they_name_and_follow_a_change_of_it() -> None:
    cache = WatchCache()
    cache.put(BINDINGS, obj("b1", 1, spec={"serviceAccount": "x"}))
    cache.put(BINDINGS, obj("b2", 2, spec={"serviceAccount": "x"}))
    cache.put(BINDINGS, obj("b3", 3, spec={"serviceAccount": "y"}))
    assert [b["metadata"]["name"] for b in cache.bindings_of("ns", "x")] == ["b1", "b2"]
    cache.put(BINDINGS, obj("b2", 4, spec={"serviceAccount": "y"}))
    assert [b["metadata"]["name"] for b in cache.bindings_of("ns", "x")] == ["b1"]
    assert [b["metadata"]["name"] for b in cache.bindings_of("ns", "y")] == ["b2", "b3"]
    cache.delete(BINDINGS, obj("b3", 5))
    assert [b["metadata"]["name"] for b in cache.bindings_of("ns", "y")] == ["b2"]
    assert cache.bindings_of("other", "y") == []


def test_the_echo_of_an_own_write_is_quiet_unless_someone_else_changed_the_object_too() -> None:
    cache = WatchCache()
    served = obj("a", 1, spec={"v": 1})
    cache.put(CREDENTIALS, served)
    finalized = obj("a", 2, spec={"v": 1}, metadata={"finalizers": ["f"]})
    cache.wrote(CREDENTIALS, served, finalized, only_ours=True)
    cache.wrote(CREDENTIALS, finalized, obj("a", 3, spec={"v": 1}, metadata={"finalizers": ["f"]}, status={"s": 1}))
    assert cache.is_echo(CREDENTIALS, obj("a", 2))
    assert cache.is_echo(CREDENTIALS, obj("a", 3))
    assert not cache.is_echo(CREDENTIALS, obj("a", 1))  # the event that started the reconcile
    assert not cache.is_echo(CREDENTIALS, obj("a", 4))  # someone else's, later
    # A status write whose answer shows a spec the reconcile did not read: its event must reconcile.
    cache.wrote(CREDENTIALS, obj("a", 4, spec={"v": 1}), obj("a", 6, spec={"v": 2}, status={"s": 2}))
    assert not cache.is_echo(CREDENTIALS, obj("a", 6))


class RecordingKube:
    """Stands in for credward.operator.kube.Kube: answers writes as the API server would, records the calls."""

    def __init__(self, secrets: dict[str, dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.secrets = secrets or {}
        self.objects: dict[str, dict[str, Any]] = {}  # credentials and bindings as the API server holds them
        self.version = 100

    def _answer(self, name: str, **change: Any) -> dict[str, Any]:
        held = self.objects.get(name) or obj(name, 0)
        meta = {**held["metadata"], **change.pop("metadata", {}), "resourceVersion": self._next()}
        self.objects[name] = {**held, **change, "metadata": meta}
        return self.objects[name]

    def _next(self) -> str:
        self.version += 1
        return str(self.version)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_secret", name))
        return self.secrets.get(name)

    async def list_bindings(self, namespace: str, account: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list_bindings", account))
        return []

    async def apply_secret(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply_secret", manifest["metadata"].get("resourceVersion")))
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": self._next()}}

    async def apply_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply_credential_status", name))
        return self._answer(name, status=status)

    async def apply_binding_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply_binding_status", name))
        return self._answer(name, status=status)

    async def add_finalizer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("add_finalizer", body["metadata"]["resourceVersion"]))
        return self._answer(body["metadata"]["name"], metadata={"finalizers": ["f"]})

    async def remove_finalizer(self, body: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("remove_finalizer", body["metadata"]["resourceVersion"]))
        return None

    async def post_event(self, involved: dict[str, Any], event: Event) -> None:
        self.calls.append(("post_event", event.reason))


def cached(kube: RecordingKube, cache: WatchCache) -> CachedKube:
    return CachedKube(kube, cache)  # type: ignore[arg-type]


async def test_a_secret_the_cache_does_not_hold_is_read_from_the_api_server() -> None:
    foreign = obj("s", 7, data={"client-secret": "dGhlaXJz"})
    kube = RecordingKube({"s": foreign})
    reads = cached(kube, WatchCache())
    assert await reads.get_secret("ns", "s") == foreign
    assert kube.calls == [("get_secret", "s")]


async def test_a_cached_secret_is_applied_on_condition_of_the_version_read_and_its_echo_is_quiet() -> None:
    cache = WatchCache()
    cache.put(SECRETS, obj("s", 7, data={"k": "dg=="}))
    kube = RecordingKube()
    reads = cached(kube, cache)
    held = await reads.get_secret("ns", "s")
    assert held is not None
    assert kube.calls == []  # served from the cache
    cache.put(SECRETS, obj("s", 8, data={"k": "bmV3"}))  # a change the reconcile did not see
    await reads.apply_secret(obj("s", 0, data={"k": "dg=="}) | {"metadata": {"namespace": "ns", "name": "s"}})
    assert kube.calls == [("apply_secret", "7")]  # the API server answers 409 if it is no longer 7
    assert cache.is_echo(SECRETS, obj("s", 101))
    assert (cache.get(SECRETS, "ns", "s") or {})["metadata"]["resourceVersion"] == "101"


async def test_bindings_come_from_the_cache_by_account() -> None:
    cache = WatchCache()
    cache.put(BINDINGS, obj("b", 1, spec={"serviceAccount": "x"}))
    kube = RecordingKube()
    kube.objects["b"] = obj("b", 1, spec={"serviceAccount": "x"})
    reads = cached(kube, cache)
    assert [b["metadata"]["name"] for b in await reads.list_bindings("ns", account="x")] == ["b"]
    assert kube.calls == []
    await reads.apply_binding_status("ns", "b", {"conditions": []})
    assert cache.is_echo(BINDINGS, obj("b", 101))


async def test_finalizer_then_status_make_one_quiet_chain() -> None:
    cache = WatchCache()
    cache.put(CREDENTIALS, obj("c", 1))
    kube = RecordingKube()
    kube.objects["c"] = obj("c", 1)
    reads = cached(kube, cache)
    body = await reads.get_credential("ns", "c")
    assert body is not None
    await reads.add_finalizer(body)
    await reads.apply_credential_status("ns", "c", {"clientId": "x"})
    assert [c[0] for c in kube.calls] == ["add_finalizer", "apply_credential_status"]
    assert cache.is_echo(CREDENTIALS, obj("c", 101))
    assert cache.is_echo(CREDENTIALS, obj("c", 102))
    assert await reads.get_credential("ns", "gone") is None


def test_the_cache_is_complete_once_the_watches_delivered_what_the_listing_found() -> None:
    cache = WatchCache()
    cache.fill(CREDENTIALS, [obj("a", 1), obj("b", 2)])
    cache.fill(SECRETS, [obj("s", 3)])
    cache.seen(CREDENTIALS, obj("a", 1))
    cache.seen(SECRETS, obj("s", 4))
    assert not cache.complete.is_set()  # b not delivered yet: a reconcile could miss what happened to it
    cache.seen(CREDENTIALS, obj("b", 2))
    assert cache.complete.is_set()


def test_what_the_watches_never_deliver_was_deleted_meanwhile_and_is_dropped() -> None:
    cache = WatchCache()
    cache.fill(BINDINGS, [obj("kept", 1, spec={"serviceAccount": "x"}), obj("gone", 2, spec={"serviceAccount": "x"})])
    cache.seen(BINDINGS, obj("kept", 1))
    assert cache.give_up_waiting() == [(BINDINGS, ("ns", "gone"))]
    assert cache.complete.is_set()
    assert [b["metadata"]["name"] for b in cache.bindings_of("ns", "x")] == ["kept"]


def test_an_answer_arriving_after_the_deletion_does_not_bring_the_object_back() -> None:
    cache = WatchCache()
    cache.put(CREDENTIALS, obj("c", 5))
    cache.delete(CREDENTIALS, obj("c", 7))  # the watch told the deletion first
    cache.put(CREDENTIALS, obj("c", 6, metadata={"finalizers": ["f"]}))  # then an older answer came
    assert cache.get(CREDENTIALS, "ns", "c") is None
    cache.put(CREDENTIALS, obj("c", 9))  # created again
    assert cache.get(CREDENTIALS, "ns", "c") is not None
    gone = obj("c", 10, metadata={"deletionTimestamp": "2030-01-01T00:00:00Z", "finalizers": []})
    cache.put(CREDENTIALS, gone)  # the last finalizer removed: deleted
    assert cache.get(CREDENTIALS, "ns", "c") is None
