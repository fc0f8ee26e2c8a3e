"""credward.operator.kube: the Kubernetes client's errors, from an injected failing client, into credward's tree."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from credward.domain.credential import FINALIZER, Event
from credward.errors import Gone, KubeRefused, KubeUnavailable, NamespaceTerminating
from credward.operator.kube import Kube

SECRET_VALUE = "cws_do-not-leak"


def api_exception(status: int, message: str = "", causes: list[dict[str, str]] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message, "details": {"causes": causes or []}}).encode()
    exc.headers = {"Retry-After": "7"} if status == 429 else {}  # type: ignore[assignment]
    return exc


class Failing:
    """Every API method raises ``error``; calls are recorded."""

    def __init__(self, error: BaseException | None = None, result: Any = None) -> None:
        self.error = error
        self.result = result
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        async def method(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if self.error is not None:
                raise self.error
            return self.result

        return method


def kube(error: BaseException | None = None, result: Any = None) -> tuple[Kube, Failing]:
    api = Failing(error, result)
    return Kube(api, api, "credward-operator"), api


def manifest() -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "namespace": "ns"},
        "data": {"client-secret": base64.b64encode(SECRET_VALUE.encode()).decode()},
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiohttp.ClientConnectionError("reset"), KubeUnavailable),
        (TimeoutError(), KubeUnavailable),
        (ConnectionRefusedError(111, "refused"), KubeUnavailable),
        (api_exception(500, "etcd"), KubeUnavailable),
        (api_exception(429, "slow down"), KubeUnavailable),
        (api_exception(409, "conflict"), KubeUnavailable),
        (api_exception(422, "invalid"), KubeRefused),
        (api_exception(403, "forbidden"), KubeRefused),
        (api_exception(403, "terminating", [{"reason": "NamespaceTerminating"}]), NamespaceTerminating),
        (api_exception(404, "gone"), Gone),
    ],
)
async def test_write_errors_are_mapped(error: BaseException, expected: type[Exception]) -> None:
    k, _ = kube(error)
    with pytest.raises(expected):
        await k.apply_secret(manifest())


async def test_429_keeps_retry_after() -> None:
    k, _ = kube(api_exception(429))
    with pytest.raises(KubeUnavailable) as info:
        await k.get_secret("ns", "s")
    assert info.value.delay == 7.0


async def test_refusal_carries_the_servers_message_without_secret_values() -> None:
    k, _ = kube(api_exception(422, f'Secret "s" is invalid: data[x]: Invalid value: "{SECRET_VALUE}"'))
    with pytest.raises(KubeRefused) as info:
        await k.apply_secret(manifest())
    assert "is invalid" in info.value.message
    assert SECRET_VALUE not in str(info.value)
    assert info.value.status_code == 422


async def test_reads_answer_none_for_404_and_map_the_rest() -> None:
    k, _ = kube(api_exception(404))
    assert await k.get_credential("ns", "x") is None
    assert await k.get_secret("ns", "x") is None
    k, _ = kube(aiohttp.ServerDisconnectedError())
    with pytest.raises(KubeUnavailable):
        await k.get_credential("ns", "x")
    with pytest.raises(KubeUnavailable):
        await k.list_bindings("ns")


async def test_status_of_a_deleted_object_is_dropped_quietly() -> None:
    k, _ = kube(api_exception(404))
    await k.apply_credential_status("ns", "x", {"conditions": []})
    await k.apply_binding_status("ns", "x", {"conditions": []})


async def test_events_never_raise() -> None:
    involved = {"apiVersion": "v1", "kind": "X", "metadata": {"name": "x", "namespace": "ns", "uid": "u"}}
    for error in (
        api_exception(403, "t", [{"reason": "NamespaceTerminating"}]),
        api_exception(500),
        aiohttp.ClientError(),
    ):
        k, api = kube(error)
        await k.post_event(involved, Event("Warning", "R", "m"))
        assert api.calls[0][0] == "create_namespaced_event"


async def test_finalizers_are_a_guarded_merge_patch_that_never_creates() -> None:
    body = {"metadata": {"name": "c", "namespace": "ns", "resourceVersion": "41", "finalizers": ["other/x"]}}
    k, api = kube()
    await k.add_finalizer(body)
    name, args, kwargs = api.calls[0]
    assert name == "patch_namespaced_custom_object"
    assert args[-1] == {"metadata": {"finalizers": ["other/x", FINALIZER], "resourceVersion": "41"}}
    assert kwargs["_content_type"] == "application/merge-patch+json"
    body["metadata"]["finalizers"] = ["other/x", FINALIZER]
    await k.remove_finalizer(body)
    assert api.calls[1][1][-1]["metadata"]["finalizers"] == ["other/x"]
    k, _ = kube(api_exception(404))
    await k.remove_finalizer(body)  # already gone: done


class RawAnswer:
    """What the client returns with ``_preload_content=False``: a status, a reason, headers and a body to read."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.reason = "Reason"
        self.headers = {"Retry-After": "2"}
        self._body = json.dumps(body).encode()

    async def read(self) -> bytes:
        return self._body


async def test_a_raw_answer_is_parsed_without_the_clients_models() -> None:
    k, api = kube(result=RawAnswer(200, {"metadata": {"name": "s", "resourceVersion": "9"}}))
    answer = await k.apply_secret(manifest())
    assert answer["metadata"]["resourceVersion"] == "9"
    assert api.calls[0][2]["_preload_content"] is False


async def test_a_raw_failure_is_mapped_like_the_clients_own() -> None:
    k, _ = kube(result=RawAnswer(409, {"kind": "Status", "message": "the object has been modified"}))
    with pytest.raises(KubeUnavailable) as info:
        await k.apply_secret(manifest())
    assert "409" in str(info.value)
    assert SECRET_VALUE not in str(info.value)
    k, _ = kube(result=RawAnswer(404, {"kind": "Status", "message": "not found"}))
    assert await k.get_secret("ns", "s") is None


def test_the_rate_limit_lets_a_burst_through_then_paces_in_order() -> None:
    from credward.operator.kube import RateLimit

    limit = RateLimit(qps=50, burst=5)
    assert [limit.reserve(10.0) for _ in range(5)] == [0.0] * 5  # the burst
    assert [round(limit.reserve(10.0), 3) for _ in range(3)] == [0.02, 0.04, 0.06]  # then 50 a second, queued
    assert limit.reserve(10.5) == 0.0  # refilled meanwhile
    assert RateLimit(qps=0, burst=1).reserve(0.0) == 0.0  # off
