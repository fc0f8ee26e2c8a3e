"""Which events lead to a look at a workload: template and annotation changes, credward Secrets it names."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from credward.operator.kube import Kube
from credward.operator.restarts import Restarts


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"credward.io/restart-on-rotation": "true"}},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {"credward.io/inject": "true"},
                    "annotations": {"credward.io/credential": "api"},
                },
                "spec": {"volumes": [{"name": "db", "secret": {"secretName": "db-credentials"}}]},
            }
        },
        "status": status,
    }


@pytest.fixture
async def restarts() -> AsyncIterator[Restarts]:
    """No request is ever sent: these tests only feed events and read the queue."""
    async with client.ApiClient() as api:
        kube = Kube(client.CoreV1Api(api), client.CustomObjectsApi(api), "test", api.sanitize_for_serialization)
        found = Restarts(api, kube, debounce=timedelta(hours=1), max_wait=timedelta(minutes=1), field_manager="test")
        yield found
        found.requeue.close()


KEY = ("shop", "Deployment/web")


async def test_a_status_update_is_no_reason_to_look_again(restarts: Restarts) -> None:
    restarts.workload_event("Deployment", None, deployment())
    assert restarts.requeue.pending() == (KEY,)
    restarts.requeue.forget(KEY)
    restarts.workload_event("Deployment", "MODIFIED", deployment(replicas=3, updatedReplicas=1))
    assert restarts.requeue.pending() == ()
    changed = deployment()
    changed["spec"]["template"]["spec"]["volumes"].append({"name": "x", "secret": {"secretName": "x-credentials"}})
    restarts.workload_event("Deployment", "MODIFIED", changed)
    assert restarts.requeue.pending() == (KEY,)


async def test_secrets_wake_the_workloads_that_name_them_or_their_credential(restarts: Restarts) -> None:
    restarts.workload_event("Deployment", None, deployment())
    restarts.requeue.forget(KEY)
    restarts.secret_event("shop", "other-credentials", "other")
    restarts.secret_event("elsewhere", "db-credentials", "db")
    assert restarts.requeue.pending() == ()
    restarts.secret_event("shop", "db-credentials", "db")
    assert restarts.requeue.pending() == (KEY,)
    restarts.requeue.forget(KEY)
    restarts.secret_event("shop", "api-secret", "api")  # by its credential: the Secret's name may be anything
    assert restarts.requeue.pending() == (KEY,)


async def test_a_workload_that_opts_out_or_goes_is_forgotten(restarts: Restarts) -> None:
    restarts.workload_event("Deployment", None, deployment())
    opted_out = copy.deepcopy(deployment())
    opted_out["metadata"]["annotations"] = {}
    restarts.workload_event("Deployment", "MODIFIED", opted_out)
    assert restarts.requeue.pending() == ()
    restarts.secret_event("shop", "db-credentials", "db")
    assert restarts.requeue.pending() == ()
    restarts.workload_event("Deployment", None, deployment())
    restarts.workload_event("Deployment", "DELETED", deployment())
    assert restarts.requeue.pending() == ()
