"""The admission endpoints as a plain ASGI app (served by uvicorn over TLS).

``POST /mutate`` (and ``/mutate/warn``) injects opted-in Pods and checks them;
``POST /validate/deny`` and ``POST /validate/warn`` check the other Pods and
workload templates for consumption that never sees a rotation (which path the
API server calls depends on the namespace's label). ``GET /healthz`` answers 200. Bodies are AdmissionReview
``admission.k8s.io/v1``; decisions come from :mod:`credward.domain.injection`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import replace
from typing import Any

from credward.domain.injection import (
    ANNOTATION_CREDENTIAL,
    AUTO,
    Verdict,
    auto_credential_name,
    check_credential,
    consumption_findings,
    consumption_verdict,
    describe,
    inject,
    parse_request,
    pod_spec_of,
    template_of,
    wants_injection,
    workload_of_pod,
)
from credward.domain.injection import InjectionSettings as Injection
from credward.errors import TransientError
from credward.webhook.configuration import PATH_DENY, PATH_MUTATE, PATH_MUTATE_WARN, PATH_WARN
from credward.webhook.credentials import CredentialLookup

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit for an object is 3 MiB


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Admission:
    """Turns AdmissionReview requests into responses."""

    def __init__(
        self,
        credentials: CredentialLookup,
        injection: Injection,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self._credentials = credentials
        self._injection = injection
        self._clock = clock

    async def mutate(self, request: dict[str, Any], warn_only: bool = False) -> Verdict:
        """Inject an opted-in Pod, and check it for rotation-unsafe consumption in the same call."""
        pod: dict[str, Any] = request.get("object") or {}
        namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
        if request.get("kind", {}).get("kind") != "Pod" or not wants_injection(
            (pod.get("metadata") or {}).get("labels")
        ):
            return Verdict.allow()
        what = describe("Pod", pod)
        parsed = parse_request(pod, what)
        if isinstance(parsed, Verdict):
            return parsed
        name = parsed.credential
        workload = None
        if name == AUTO:
            workload = workload_of_pod(pod)
            if workload is None:
                return Verdict.deny(
                    "NoWorkload",
                    f"{what} asks for an automatic credential ({ANNOTATION_CREDENTIAL}: auto), which only pods of a "
                    "Deployment, StatefulSet or Job get: name a ServiceAccountCredential instead",
                )
            name = auto_credential_name(*workload)
            parsed = replace(parsed, credential=name)
        try:
            credential = await self._credentials.get(namespace, name)
        except TransientError as exc:
            return Verdict.deny(
                "LookupFailed", f'{what}: credward could not read credential "{name}" right now ({exc}): retry shortly'
            )
        refusal = check_credential(credential, name, namespace, what, self._clock())
        if refusal is not None and workload is not None and credential is None:
            return Verdict.deny(
                "AutomaticCredentialPending",
                f'{what}: credential "{name}", made automatically for {workload[0]} {workload[1]}, does not exist '
                f"yet: credward creates it when it sees the {workload[0]} (its controller retries the pod)",
            )
        if refusal is not None:
            return refusal
        assert credential is not None
        verdict = inject(pod, credential, parsed, self._injection, what)
        if not verdict.allowed:
            return verdict
        managed = self._credentials.managed_secrets(namespace)
        consumption = consumption_verdict(
            consumption_findings(pod.get("spec") or {}, managed, what), namespace, warn_only
        )
        if not consumption.allowed:
            return consumption
        return Verdict.allow(verdict.patch, consumption.warnings)

    def validate(self, request: dict[str, Any], warn_only: bool) -> Verdict:
        kind = str((request.get("kind") or {}).get("kind", ""))
        obj: dict[str, Any] = request.get("object") or {}
        namespace = str(request.get("namespace") or "")
        pod_spec = pod_spec_of(kind, obj)
        if not pod_spec:
            return Verdict.allow()
        what = describe(kind, obj)
        managed = self._credentials.managed_secrets(namespace)
        verdict = consumption_verdict(consumption_findings(pod_spec, managed, what), namespace, warn_only)
        template = template_of(kind, obj)
        if verdict.allowed and template is not None:
            return Verdict.allow(warnings=[*verdict.warnings, *self._template_warnings(template, namespace, what)])
        return verdict

    def _template_warnings(self, template: Mapping[str, Any], namespace: str, what: str) -> list[str]:
        """A template that opts in is checked at apply time too, so a missing credential shows before pods fail."""
        meta = template.get("metadata") or {}
        if not wants_injection(meta.get("labels")):
            return []
        parsed = parse_request(template, what)
        if isinstance(parsed, Verdict):
            return [f"credward: {parsed.message}; its pods will be refused"]
        if parsed.credential == AUTO:
            return []
        if parsed.credential in self._credentials.managed_secrets(namespace).values():
            return []
        return [
            f'credward: {what} asks for credential "{parsed.credential}", which namespace "{namespace}" does not '
            "have (yet): its pods are refused until the ServiceAccountCredential exists"
        ]


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": verdict.message}
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(verdict.patch)).encode()).decode()
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


class AdmissionApp:
    """ASGI: routing, body, JSON. Anything unexpected is a 500 the API server treats per failurePolicy."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method == "GET":
            await _reply(send, 200, b"ok", b"text/plain")
            return
        if method != "POST" or path not in (PATH_MUTATE, PATH_MUTATE_WARN, PATH_DENY, PATH_WARN):
            await _reply(send, 404, b"not found", b"text/plain")
            return
        body = await _body(receive)
        if body is None:
            await _reply(send, 413, b"too large", b"text/plain")
            return
        try:
            review = json.loads(body)
            request = review["request"]
            uid = str(request["uid"])
        except (ValueError, KeyError, TypeError):
            await _reply(send, 400, b"expected an admission.k8s.io/v1 AdmissionReview", b"text/plain")
            return
        try:
            if path in (PATH_MUTATE, PATH_MUTATE_WARN):
                verdict = await self.admission.mutate(request, warn_only=path == PATH_MUTATE_WARN)
            else:
                verdict = self.admission.validate(request, warn_only=path == PATH_WARN)
        except Exception:
            log.exception("admission %s failed for %s", path, uid)
            await _reply(send, 500, b"internal error", b"text/plain")
            return
        if not verdict.allowed:
            log.info("admission %s refused %s: %s", path, uid, verdict.reason)
        await _reply(send, 200, json.dumps(review_response(uid, verdict)).encode(), b"application/json")


async def _body(receive: Receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _reply(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
