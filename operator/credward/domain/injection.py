"""What admission does to Pods and pod templates: pure decisions, no I/O.

Two questions, each answered from the object under review plus what credward
knows about the namespace's credentials (a :class:`CredentialView` each):

* :func:`inject` — a Pod that opted in (label ``credward.io/inject: "true"``)
  and names a credential (annotation ``credward.io/credential``) gets a Secret
  volume for that credential's Secret, mounted read-only as a directory, and
  ``CLIENT_ID``, ``CLIENT_SECRET_PATH`` and ``SECURITY_BASE_URL`` in the
  chosen containers. The answer is a JSONPatch (RFC 6902) that only *adds*:
  nothing the user wrote is changed or removed. Running it on its own output
  yields an empty patch (the API server may call a webhook twice), and a name
  the user already took for something else is a refusal naming the clash.
* :func:`consumption_findings` — a pod spec (of a Pod or of a workload's
  template) that reads a credward Secret in a way that never sees a rotation
  (a ``subPath`` mount, an env ``secretKeyRef`` to the client secret, an
  ``envFrom`` of the whole Secret). Each finding says how to fix it; the
  webhook refuses or warns depending on the namespace.

Every message is written for the person who ran ``kubectl apply``: it names
the object, the field, and what to change.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from credward.api import GROUP, KEY_CLIENT_ID, KEY_CLIENT_SECRET
from credward.domain.timefmt import parse_rfc3339, to_rfc3339

LABEL_INJECT = f"{GROUP}/inject"
ANNOTATION_CREDENTIAL = f"{GROUP}/credential"
ANNOTATION_CONTAINERS = f"{GROUP}/containers"
ANNOTATION_INIT_CONTAINERS = f"{GROUP}/init-containers"
ANNOTATION_MOUNT_PATH = f"{GROUP}/mount-path"
# On a Namespace: "warn" turns consumption refusals into admission warnings.
LABEL_SECRET_CONSUMPTION = f"{GROUP}/secret-consumption"
CONSUMPTION_WARN = "warn"
# The value of ANNOTATION_CREDENTIAL that asks for an account made for the workload.
AUTO = "auto"

ENV_CLIENT_ID = "CLIENT_ID"
ENV_CLIENT_SECRET_PATH = "CLIENT_SECRET_PATH"
ENV_SECURITY_BASE_URL = "SECURITY_BASE_URL"
ENV_NAMES = (ENV_CLIENT_ID, ENV_CLIENT_SECRET_PATH, ENV_SECURITY_BASE_URL)
DEFAULT_MOUNT_ROOT = "/var/run/secrets/credward.io"
ALL = "*"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL = 63


@dataclass(frozen=True, slots=True)
class CredentialView:
    """What admission needs to know about one ServiceAccountCredential (never a secret value)."""

    namespace: str
    name: str
    secret_name: str
    revoked: bool = False
    expires_at: datetime | None = None
    expired: bool = False  # its Expired condition is True

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any]) -> CredentialView:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        name = str(meta.get("name", ""))
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or () if isinstance(c, dict)}
        expires = status.get("expiresAt")
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=name,
            secret_name=str(status.get("secretName") or spec.get("secretName") or f"{name}-credentials"),
            revoked=bool(spec.get("revoked")) or conditions.get("Revoked") == "True",
            expires_at=parse_rfc3339(expires) if isinstance(expires, str) and expires else None,
            expired=conditions.get("Expired") == "True",
        )

    def is_expired(self, now: datetime) -> bool:
        return self.expired or (self.expires_at is not None and self.expires_at <= now)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An admission answer: allowed or not, the JSONPatch to apply, warnings to show."""

    allowed: bool
    message: str = ""
    reason: str = ""  # CamelCase, for logs and metrics
    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def allow(cls, patch: Sequence[dict[str, Any]] = (), warnings: Sequence[str] = ()) -> Verdict:
        return cls(True, patch=tuple(patch), warnings=tuple(warnings))

    @classmethod
    def deny(cls, reason: str, message: str) -> Verdict:
        return cls(False, message=message, reason=reason)


@dataclass(frozen=True, slots=True)
class InjectionSettings:
    """The operator-wide part of what is injected."""

    security_base_url: str
    mount_root: str = DEFAULT_MOUNT_ROOT


@dataclass(frozen=True, slots=True)
class InjectionRequest:
    """What a Pod's annotations ask for."""

    credential: str
    containers: tuple[str, ...] | None  # None: every container
    init_containers: tuple[str, ...] = ()  # ("*",): every init container
    mount_path: str | None = None  # None: <mount root>/<credential>


def wants_injection(labels: Mapping[str, str] | None) -> bool:
    return (labels or {}).get(LABEL_INJECT) == "true"


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


def parse_request(pod: Mapping[str, Any], what: str) -> InjectionRequest | Verdict:
    """Read the annotations of an opted-in pod; a malformed one is a refusal naming it."""
    annotations: Mapping[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
    credential = (annotations.get(ANNOTATION_CREDENTIAL) or "").strip()
    if not credential:
        return Verdict.deny(
            "CredentialNotNamed",
            f"{what} is labelled {LABEL_INJECT}=true but has no {ANNOTATION_CREDENTIAL} annotation: "
            f"add {ANNOTATION_CREDENTIAL}: <name of a ServiceAccountCredential in this namespace>, "
            f"or remove the {LABEL_INJECT} label",
        )
    mount_path = annotations.get(ANNOTATION_MOUNT_PATH)
    if mount_path is not None:
        mount_path = mount_path.strip()
        if (
            not mount_path.startswith("/")
            or ":" in mount_path
            or ".." in mount_path.split("/")
            or posixpath.normpath(mount_path) != mount_path
            or mount_path == "/"
        ):
            return Verdict.deny(
                "InvalidMountPath",
                f"{what}: annotation {ANNOTATION_MOUNT_PATH}={mount_path!r} must be an absolute, normalized "
                f"directory path without ':' or '..' (e.g. {DEFAULT_MOUNT_ROOT}/{credential}), not '/'",
            )
    containers = _names(annotations.get(ANNOTATION_CONTAINERS)) if ANNOTATION_CONTAINERS in annotations else None
    if containers == ():
        return Verdict.deny(
            "InvalidContainers",
            f"{what}: annotation {ANNOTATION_CONTAINERS} is empty: list container names separated by commas, "
            "or remove it to inject into every container",
        )
    return InjectionRequest(
        credential=credential,
        containers=containers if containers is None or containers != (ALL,) else None,
        init_containers=_names(annotations.get(ANNOTATION_INIT_CONTAINERS)),
        mount_path=mount_path,
    )


def check_credential(
    credential: CredentialView | None, name: str, namespace: str, what: str, now: datetime
) -> Verdict | None:
    """A refusal when the named credential cannot be used right now, else None."""
    if credential is None:
        return Verdict.deny(
            "CredentialNotFound",
            f'{what} asks for credential "{name}" ({ANNOTATION_CREDENTIAL}) but namespace "{namespace}" has no '
            f'ServiceAccountCredential "{name}": create it first (kubectl apply a ServiceAccountCredential '
            f"named {name} in {namespace}), or correct the annotation",
        )
    if credential.revoked:
        return Verdict.deny(
            "CredentialRevoked",
            f'{what} asks for credential "{name}" in namespace "{namespace}", which is revoked (spec.revoked): '
            f"no new pod may use it. Set spec.revoked to false if the revocation was a mistake, or name "
            f"another credential in {ANNOTATION_CREDENTIAL}",
        )
    if credential.is_expired(now):
        when = f" at {to_rfc3339(credential.expires_at)}" if credential.expires_at else ""
        return Verdict.deny(
            "CredentialExpired",
            f'{what} asks for credential "{name}" in namespace "{namespace}", which expired{when} '
            f"(spec.lifetime): its secrets are refused. Create a new credential (or delete and recreate this one) "
            f"and name it in {ANNOTATION_CREDENTIAL}",
        )
    return None


def volume_name(credential: str) -> str:
    """A DNS label for the credential's volume: ``credward-<name>``, shortened with a digest when needed."""
    plain = f"credward-{credential}"
    if len(plain) <= _MAX_LABEL and _DNS_LABEL.match(plain):
        return plain
    digest = hashlib.sha256(credential.encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]", "-", plain.lower())[: _MAX_LABEL - 9].rstrip("-")
    return f"{stem}-{digest}"


def mount_path_for(request: InjectionRequest, settings: InjectionSettings) -> str:
    return request.mount_path or f"{settings.mount_root.rstrip('/')}/{request.credential}"


def desired_env(credential: CredentialView, mount_path: str, settings: InjectionSettings) -> tuple[dict[str, Any], ...]:
    """The three variables. CLIENT_ID comes from the Secret (it never rotates), so no status is needed yet."""
    return (
        {"name": ENV_CLIENT_ID, "valueFrom": {"secretKeyRef": {"name": credential.secret_name, "key": KEY_CLIENT_ID}}},
        {"name": ENV_CLIENT_SECRET_PATH, "value": f"{mount_path}/{KEY_CLIENT_SECRET}"},
        {"name": ENV_SECURITY_BASE_URL, "value": settings.security_base_url},
    )


def _same_env(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    if "value" in want:
        return have.get("value") == want["value"] and not have.get("valueFrom")
    ref = ((have.get("valueFrom") or {}).get("secretKeyRef")) or {}
    want_ref = want["valueFrom"]["secretKeyRef"]
    return (
        not have.get("value")
        and set(have.get("valueFrom") or {}) == {"secretKeyRef"}
        and ref.get("name") == want_ref["name"]
        and ref.get("key") == want_ref["key"]
        and not ref.get("optional")
    )


def _is_our_volume(volume: Mapping[str, Any], secret_name: str) -> bool:
    sources = set(volume) - {"name"}
    return sources == {"secret"} and (volume.get("secret") or {}).get("secretName") == secret_name


@dataclass
class _Patch:
    ops: list[dict[str, Any]] = field(default_factory=list)

    def add(self, path: str, value: Any) -> None:
        self.ops.append({"op": "add", "path": path, "value": value})


def _select(
    kind: str, containers: Sequence[Mapping[str, Any]], wanted: tuple[str, ...] | None, what: str
) -> list[int] | Verdict:
    names = [str(c.get("name", "")) for c in containers]
    if wanted is None or wanted == (ALL,):
        return list(range(len(containers)))
    unknown = [n for n in wanted if n not in names]
    if unknown:
        annotation = ANNOTATION_CONTAINERS if kind == "containers" else ANNOTATION_INIT_CONTAINERS
        return Verdict.deny(
            "UnknownContainer",
            f"{what}: annotation {annotation} names {', '.join(repr(n) for n in unknown)}, but its {kind} are "
            f"{', '.join(repr(n) for n in names) or 'none'}: correct the annotation",
        )
    return [names.index(n) for n in wanted]


def inject(
    pod: Mapping[str, Any],
    credential: CredentialView,
    request: InjectionRequest,
    settings: InjectionSettings,
    what: str,
) -> Verdict:
    """The JSONPatch that adds the credential's volume, mounts and variables, or a refusal naming a clash."""
    spec: Mapping[str, Any] = pod.get("spec") or {}
    vname = volume_name(credential.name)
    mount_path = mount_path_for(request, settings)
    env = desired_env(credential, mount_path, settings)
    patch = _Patch()

    volumes: list[Mapping[str, Any]] = list(spec.get("volumes") or [])
    existing = next((v for v in volumes if v.get("name") == vname), None)
    if existing is None:
        volume = {"name": vname, "secret": {"secretName": credential.secret_name}}
        if volumes:
            patch.add("/spec/volumes/-", volume)
        else:
            patch.add("/spec/volumes", [volume])
    elif not _is_our_volume(existing, credential.secret_name):
        return Verdict.deny(
            "VolumeNameClash",
            f'{what} already has a volume named "{vname}", which credward adds for credential '
            f'"{credential.name}" (Secret {credential.secret_name}): rename your volume',
        )

    targets: list[tuple[str, int]] = []
    wanted_by_kind: list[tuple[str, tuple[str, ...] | None]] = [("containers", request.containers)]
    if request.init_containers:
        wanted_by_kind.append(("initContainers", request.init_containers))
    for kind, wanted in wanted_by_kind:
        selected = _select(kind, spec.get(kind) or [], wanted, what)
        if isinstance(selected, Verdict):
            return selected
        targets += [(kind, i) for i in selected]

    for kind, i in targets:
        container: Mapping[str, Any] = spec[kind][i]
        where = f'{what}, {"init " if kind == "initContainers" else ""}container "{container.get("name")}"'
        base = f"/spec/{kind}/{i}"
        clash = _add_mount(patch, base, container, vname, mount_path, where)
        if clash is not None:
            return clash
        clash = _add_env(patch, base, container, env, where)
        if clash is not None:
            return clash
    return Verdict.allow(patch.ops)


def _add_mount(
    patch: _Patch, base: str, container: Mapping[str, Any], vname: str, mount_path: str, where: str
) -> Verdict | None:
    mounts: list[Mapping[str, Any]] = list(container.get("volumeMounts") or [])
    ours = False
    for m in mounts:
        same_name, same_path = m.get("name") == vname, m.get("mountPath") == mount_path
        if same_name and same_path and m.get("readOnly") is True and not m.get("subPath") and not m.get("subPathExpr"):
            ours = True
        elif same_name:
            return Verdict.deny(
                "VolumeMountClash",
                f'{where} already mounts volume "{vname}" at {m.get("mountPath")} (or with subPath); credward mounts '
                f"it read-only at {mount_path}: remove your mount of it",
            )
        elif same_path:
            return Verdict.deny(
                "MountPathClash",
                f'{where} already mounts volume "{m.get("name")}" at {mount_path}, where credward mounts the '
                f"credential: choose another directory with annotation {ANNOTATION_MOUNT_PATH}",
            )
    if not ours:
        mount = {"name": vname, "mountPath": mount_path, "readOnly": True}
        if mounts:
            patch.add(f"{base}/volumeMounts/-", mount)
        else:
            patch.add(f"{base}/volumeMounts", [mount])
    return None


def _add_env(
    patch: _Patch, base: str, container: Mapping[str, Any], env: Iterable[dict[str, Any]], where: str
) -> Verdict | None:
    have: list[Mapping[str, Any]] = list(container.get("env") or [])
    by_name = {str(e.get("name")): e for e in have}
    missing = []
    for want in env:
        current = by_name.get(want["name"])
        if current is None:
            missing.append(want)
        elif not _same_env(current, want):
            return Verdict.deny(
                "EnvClash",
                f"{where} already sets {want['name']}, which credward sets for the credential: remove your "
                f"{want['name']} (credward's value: {_describe(want)}), or drop the {LABEL_INJECT} label",
            )
    if not missing:
        return None
    if not have:
        patch.add(f"{base}/env", missing)
        return None
    # In front, so the user's own variables can refer to these as $(CLIENT_SECRET_PATH).
    for i, want in enumerate(missing):
        patch.add(f"{base}/env/{i}", want)
    return None


def _describe(env: Mapping[str, Any]) -> str:
    if "value" in env:
        return repr(env["value"])
    ref = env["valueFrom"]["secretKeyRef"]
    return f"key {ref['key']} of Secret {ref['name']}"


# -- consumption that never sees a rotation ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One way a pod spec reads a credward Secret that a rotation never reaches."""

    message: str


def pod_spec_of(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec inside a Pod, a workload's template, or a CronJob's job template."""
    spec: Mapping[str, Any] = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") or {}
    pod_spec: Mapping[str, Any] | None = template.get("spec")
    return pod_spec


def template_of(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod template (metadata + spec) of a workload, or None for a Pod."""
    if kind == "Pod":
        return None
    spec: Mapping[str, Any] = obj.get("spec") or {}
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template: Mapping[str, Any] | None = spec.get("template")
    return template


def consumption_findings(pod_spec: Mapping[str, Any], managed: Mapping[str, str], what: str) -> list[Finding]:
    """Every subPath mount, client-secret secretKeyRef and envFrom of a Secret in ``managed`` (secret -> credential)."""
    if not managed:
        return []
    secret_volumes: dict[str, str] = {}
    for volume in pod_spec.get("volumes") or []:
        secret = (volume.get("secret") or {}).get("secretName")
        names = [secret] if secret else []
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name"):
                names.append(source["secret"]["name"])
        for name in names:
            if name in managed:
                secret_volumes[str(volume.get("name"))] = name
    findings: list[Finding] = []
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod_spec.get(kind) or []:
            where = f'{what}, container "{container.get("name")}"'
            for m in container.get("volumeMounts") or []:
                secret = secret_volumes.get(str(m.get("name")))
                sub = m.get("subPath") or m.get("subPathExpr")
                if secret and sub:
                    findings.append(
                        Finding(
                            f'{where} mounts Secret {secret} (credential "{managed[secret]}") with subPath '
                            f"{sub!r}: a subPath mount is a copy that never sees a rotated secret. Mount the volume "
                            f"as a directory (drop subPath, mountPath a directory) and read "
                            f"<mountPath>/{KEY_CLIENT_SECRET}, or let credward inject it "
                            f"({LABEL_INJECT}=true, {ANNOTATION_CREDENTIAL}={managed[secret]})"
                        )
                    )
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref.get("name") in managed and ref.get("key") == KEY_CLIENT_SECRET:
                    findings.append(
                        Finding(
                            f"{where} reads {KEY_CLIENT_SECRET} of Secret {ref['name']} (credential "
                            f'"{managed[ref["name"]]}") into env {env.get("name")} through secretKeyRef: an '
                            "environment variable is fixed when the container starts and never sees a rotated "
                            f"secret. Read the file at $CLIENT_SECRET_PATH instead: let credward inject it "
                            f"({LABEL_INJECT}=true, {ANNOTATION_CREDENTIAL}={managed[ref['name']]})"
                        )
                    )
            for source in container.get("envFrom") or []:
                name = str((source.get("secretRef") or {}).get("name"))
                if name in managed:
                    findings.append(
                        Finding(
                            f'{where} loads all of Secret {name} (credential "{managed[name]}") through envFrom, '
                            f"{KEY_CLIENT_SECRET} included: environment variables never see a rotated secret. "
                            f"Remove the envFrom and read the file at $CLIENT_SECRET_PATH: let credward inject it "
                            f"({LABEL_INJECT}=true, {ANNOTATION_CREDENTIAL}={managed[name]})"
                        )
                    )
    return findings


def consumption_verdict(findings: Sequence[Finding], namespace: str, warn_only: bool) -> Verdict:
    """Refuse (or, where the namespace asks for it, warn) with every finding; the API server shows each."""
    if not findings:
        return Verdict.allow()
    if warn_only:
        return Verdict.allow(warnings=[f"credward: {f.message}" for f in findings])
    hint = (
        f" (to only warn in this namespace instead: kubectl label namespace {namespace} "
        f"{LABEL_SECRET_CONSUMPTION}={CONSUMPTION_WARN})"
    )
    return Verdict.deny("RotationUnsafeConsumption", "; ".join(f.message for f in findings) + hint)


def describe(kind: str, obj: Mapping[str, Any]) -> str:
    """How messages name the object: ``Pod web-7c9d-*`` for a Pod still to get its generated name."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or (f"{meta['generateName']}*" if meta.get("generateName") else "<unnamed>")
    suffix = "" if kind == "Pod" else " (pod template)"
    return f"{kind} {name}{suffix}"


# -- automatic accounts for workloads --------------------------------------------------------------

# On a workload or its Namespace: the spec (JSON) of the credential credward makes for it.
ANNOTATION_CREDENTIAL_SPEC = f"{GROUP}/credential-spec"
AUTO_KINDS = {"Deployment": "deployment", "StatefulSet": "statefulset", "Job": "job"}
_MAX_CREDENTIAL_NAME = 241  # so the default Secret name '<name>-credentials' stays a valid name


def auto_credential_name(kind: str, name: str) -> str:
    """``<kind>-<workload>``, e.g. ``deployment-web``: predictable, and never a name a person would pick by chance."""
    plain = f"{AUTO_KINDS[kind]}-{name}"
    if len(plain) <= _MAX_CREDENTIAL_NAME:
        return plain
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{plain[: _MAX_CREDENTIAL_NAME - 9].rstrip('-.')}-{digest}"


def workload_of_pod(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the Deployment, StatefulSet or Job a Pod belongs to, read from its controller reference.

    A Deployment's pods are owned by a ReplicaSet named ``<deployment>-<pod-template-hash>``.
    """
    meta = pod.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or () if o.get("controller")), None)
    if owner is None:
        return None
    kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
    if kind == "ReplicaSet":
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        if template_hash and name.endswith(f"-{template_hash}"):
            return "Deployment", name[: -len(template_hash) - 1]
        return None
    return (kind, name) if kind in ("StatefulSet", "Job") else None


def wants_auto_credential(kind: str, workload: Mapping[str, Any]) -> bool:
    template = template_of(kind, workload) or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return kind in AUTO_KINDS and annotations.get(ANNOTATION_CREDENTIAL) == AUTO


def auto_credential(kind: str, workload: Mapping[str, Any], namespace_default: str | None) -> dict[str, Any] | Verdict:
    """The ServiceAccountCredential made for a workload, owned by it; a bad spec annotation is a refusal naming it.

    Its spec is the workload's ``credward.io/credential-spec`` annotation (JSON), else the namespace's,
    else only a displayName (every other field takes the CRD's defaults).
    """
    meta = workload.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    spec: dict[str, Any] = {}
    for source, text in (
        (f"{kind} {name}", (meta.get("annotations") or {}).get(ANNOTATION_CREDENTIAL_SPEC)),
        (f"Namespace {namespace}", namespace_default),
    ):
        if not text:
            continue
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            return Verdict.deny(
                "InvalidCredentialSpec", f"{source}: annotation {ANNOTATION_CREDENTIAL_SPEC} is not JSON ({exc})"
            )
        if not isinstance(parsed, dict):
            return Verdict.deny(
                "InvalidCredentialSpec",
                f"{source}: annotation {ANNOTATION_CREDENTIAL_SPEC} must be a JSON object (a credential's spec)",
            )
        spec = parsed
        break
    spec.setdefault("displayName", f"{kind} {namespace}/{name} (automatic)")
    api_version = "batch/v1" if kind == "Job" else "apps/v1"
    return {
        "apiVersion": "credward.io/v1alpha1",
        "kind": "ServiceAccountCredential",
        "metadata": {
            "name": auto_credential_name(kind, name),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "credward"},
            "ownerReferences": [
                {"apiVersion": api_version, "kind": kind, "name": name, "uid": str(meta.get("uid", ""))}
            ],
        },
        "spec": spec,
    }
