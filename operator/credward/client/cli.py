"""``credward token|decode|validate|status``: the client library from a shell.

Exit codes: 0 done; 1 the token was refused or does not grant what was asked
(the message names the check); 2 a usage or configuration problem; 3 the
issuer, the security service or the Kubernetes API could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt

from credward.client.authorizer import ClientCredentialsAuthorizer
from credward.client.errors import ClientConfigError, InsufficientScope, InvalidToken, TokenEndpointError
from credward.client.validator import TokenValidator
from credward.domain.rotation import ANNOTATION_ROTATE, ANNOTATION_ROTATE_NOW
from credward.errors import ServiceUnavailable

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
ENV_ADMIN_TOKEN = "CREDWARD_ADMIN_TOKEN"
ENV_ADMIN_TOKEN_FILE = "CREDWARD_ADMIN_TOKEN_FILE"


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="print an access token for the environment's credentials")
    token.add_argument("--secret-path", help="the mounted client-secret file [CLIENT_SECRET_PATH]")
    token.add_argument("--client-id", help="[CLIENT_ID; default: the client-id file beside the secret]")
    token.add_argument("--base-url", help="the security service, for discovery [SECURITY_BASE_URL]")
    token.add_argument("--scope", help="space-separated scopes to ask for (default: all the account holds)")
    token.add_argument("--audience", action="append", default=[], help="audience to ask for (repeatable)")
    token.set_defaults(func=token_command)

    decode = sub.add_parser("decode", help="show a token's header and claims WITHOUT verifying anything")
    decode.add_argument("token", nargs="?", default="-", help="the token, or - to read it from stdin")
    decode.set_defaults(func=decode_command)

    validate = sub.add_parser("validate", help="verify a token against its issuer and check one permission")
    validate.add_argument("token", nargs="?", default="-", help="the token, or - to read it from stdin")
    validate.add_argument("--verb", choices=["read", "write"], required=True)
    validate.add_argument("--path", required=True, help="the path to check, e.g. /store/builds/7")
    validate.add_argument("--audience", action="append", default=[], help="accepted audience (repeatable)")
    validate.add_argument("--issuer", help="the expected iss [SECURITY_BASE_URL]")
    validate.add_argument("--base-url", help="where discovery is, if not at the issuer")
    validate.add_argument("--role", action="append", default=[], help="also require one of these roles")
    validate.add_argument("--leeway", type=float, default=30.0, help="seconds of clock skew allowed (default 30)")
    validate.set_defaults(func=validate_command)

    status = sub.add_parser("status", help="a ServiceAccountCredential and the security service's view, side by side")
    status.add_argument("name")
    status.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    status.add_argument("--kubeconfig", help="default: in-cluster credentials, else $KUBECONFIG or ~/.kube/config")
    status.add_argument("--security-base-url", help="[SECURITY_BASE_URL or CREDWARD_SECURITY_BASE_URL]")
    status.add_argument(
        "--admin-token-file", type=Path, help=f"bearer token for the admin API [{ENV_ADMIN_TOKEN_FILE}]"
    )
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(func=status_command)

    rotate = sub.add_parser("rotate", help="ask the operator to rotate a ServiceAccountCredential's client secret")
    rotate.add_argument("name")
    rotate.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    rotate.add_argument("--kubeconfig", help="default: in-cluster credentials, else $KUBECONFIG or ~/.kube/config")
    rotate.add_argument(
        "--now",
        action="store_true",
        help="emergency: the old secret stops working at once (no grace period), e.g. after a leak",
    )
    rotate.set_defaults(func=rotate_command)


def _fail(message: str, code: int) -> int:
    print(f"credward: {message}", file=sys.stderr)
    return code


def _read_token(arg: str) -> str:
    return (sys.stdin.read() if arg == "-" else arg).strip()


def token_command(args: argparse.Namespace) -> int:
    try:
        auth = ClientCredentialsAuthorizer.from_env(
            secret_path=args.secret_path,
            client_id=args.client_id,
            base_url=args.base_url,
            scope=args.scope or (),
            audience=args.audience,
        )
        with auth:
            print(auth.get_token())
    except ClientConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TokenEndpointError as exc:
        return _fail(str(exc), EXIT_REFUSED)
    except ServiceUnavailable as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    return 0


def _times(claims: dict[str, Any]) -> dict[str, str]:
    now = time.time()
    out = {}
    for name in ("iat", "nbf", "exp"):
        value = claims.get(name)
        if isinstance(value, int | float):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
            delta = value - now
            out[name] = f"{stamp} ({'in ' if delta >= 0 else ''}{abs(delta):.0f}s{' ago' if delta < 0 else ''})"
    return out


def decode_command(args: argparse.Namespace) -> int:
    token = _read_token(args.token)
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        return _fail(f"not a JWT: {exc}", EXIT_REFUSED)
    print("NOT VERIFIED: signature and claims were not checked (use `credward validate`)", file=sys.stderr)
    print(json.dumps({"header": header, "claims": claims, "times": _times(claims)}, indent=2))
    return 0


def validate_command(args: argparse.Namespace) -> int:
    issuer = args.issuer or os.environ.get("SECURITY_BASE_URL")
    if not issuer:
        return _fail("say which issuer to trust: --issuer or SECURITY_BASE_URL", EXIT_USAGE)
    token = _read_token(args.token)
    audience: list[str] | None = args.audience or None
    try:
        with TokenValidator(issuer, audience=audience, base_url=args.base_url, leeway=args.leeway) as validator:
            verified = validator.verify(token)
            grant = verified.require(args.verb, args.path)
            role = verified.require_role(*args.role) if args.role else None
    except (InvalidToken, InsufficientScope) as exc:
        print(f"refused: {exc}")
        return EXIT_REFUSED
    except ServiceUnavailable as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    left = verified.expires_at - time.time()
    print(f"valid: sub={verified.subject} client_id={verified.client_id} expires in {left:.0f}s")
    if audience is None:
        print("note: audience not checked (no --audience)")
    print(f"allowed: {args.verb} {args.path} (granted by {grant.scope})" + (f", role {role}" if role else ""))
    return 0


def _admin_token(args: argparse.Namespace) -> str | None:
    path = args.admin_token_file or (
        Path(os.environ[ENV_ADMIN_TOKEN_FILE]) if os.environ.get(ENV_ADMIN_TOKEN_FILE) else None
    )
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ClientConfigError(f"cannot read the admin token file {path}: {exc.strerror}") from None
    return os.environ.get(ENV_ADMIN_TOKEN) or None


def _incluster_namespace() -> str:
    return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()


async def _kube_config(args: argparse.Namespace) -> str:
    """Load the Kubernetes client's configuration as kubectl would; returns the namespace to use."""
    from kubernetes_asyncio import config

    namespace: str | None = args.namespace
    if args.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return namespace or _incluster_namespace()
    loader = await config.load_kube_config(config_file=args.kubeconfig, persist_config=False)
    return namespace or loader.current_context.get("context", {}).get("namespace") or "default"


async def _read_kubernetes(args: argparse.Namespace) -> tuple[str, dict[str, Any] | None, list[dict[str, Any]]]:
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    from credward.api import CREDENTIAL_PLURAL, GROUP, ROLEBINDING_PLURAL, VERSION

    namespace = await _kube_config(args)
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        try:
            credential = await custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, CREDENTIAL_PLURAL, args.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return namespace, None, []
            raise
        listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, ROLEBINDING_PLURAL)
    return namespace, credential, list(listed.get("items", []))


def _service_view(base_url: str | None, token: str | None, client_id: str | None) -> tuple[Any, str | None]:
    """The AccountView, or None and a note saying why there is none."""
    from pydantic import ValidationError

    from credward.api.admin import AccountView

    if base_url is None:
        return None, "not asked (no --security-base-url / SECURITY_BASE_URL)"
    if token is None:
        return None, f"not asked (no admin token: --admin-token-file, {ENV_ADMIN_TOKEN_FILE} or {ENV_ADMIN_TOKEN})"
    if client_id is None:
        return None, "not asked (the credential has no clientId in its status yet)"
    url = f"{base_url.rstrip('/')}/v1/admin/accounts/{client_id}"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
    except httpx.HTTPError as exc:
        return None, f"unreachable at {base_url}: {type(exc).__name__}"
    if response.status_code == 404:
        return None, f"does not know client {client_id} (not registered)"
    if response.status_code != 200:
        return None, f"answered {response.status_code} at {url}"
    try:
        return AccountView.model_validate_json(response.content), None
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
        return None, f"answered a view that is not an AccountView ({fields})"


def status_command(args: argparse.Namespace) -> int:
    from credward.client import status

    try:
        admin_token = _admin_token(args)
        namespace, credential, bindings = asyncio.run(_read_kubernetes(args))
    except ClientConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except Exception as exc:  # the Kubernetes client's config and API errors have no common base worth naming
        return _fail(f"cannot read from the Kubernetes API: {type(exc).__name__}: {exc}", EXIT_UNREACHABLE)
    if credential is None:
        return _fail(f"ServiceAccountCredential {namespace}/{args.name} not found", EXIT_REFUSED)
    base_url = (
        args.security_base_url or os.environ.get("SECURITY_BASE_URL") or os.environ.get("CREDWARD_SECURITY_BASE_URL")
    )
    client_id = (credential.get("status") or {}).get("clientId")
    view, note = _service_view(base_url, admin_token, client_id)
    table = status.rows(credential, bindings, view)
    if args.output == "json":
        print(
            json.dumps({"namespace": namespace, "name": args.name, "rows": [asdict(r) for r in table], "service": note})
        )
    else:
        print(f"ServiceAccountCredential {namespace}/{args.name}\n")
        print(status.render(table, note))
    return 0


async def _request_rotation(args: argparse.Namespace, value: str) -> tuple[str, bool]:
    """Set the rotate annotation(s) with a merge patch; (namespace, whether the credential exists)."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    from credward.api import CREDENTIAL_PLURAL, GROUP, VERSION

    annotations = {ANNOTATION_ROTATE: value, ANNOTATION_ROTATE_NOW: value if args.now else None}
    namespace = await _kube_config(args)
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        try:
            await custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                CREDENTIAL_PLURAL,
                args.name,
                {"metadata": {"annotations": annotations}},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:
                return namespace, False
            raise
    return namespace, True


def rotate_command(args: argparse.Namespace) -> int:
    """``credward rotate [--now] <name>``: a new value of credward.io/rotate (and credward.io/rotate-now with --now).

    The operator carries out each new value once; with ``--now`` the old secret stops at once instead of after
    its grace period. A pod still holding the old secret fails until the kubelet refreshes its file.
    """
    value = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        namespace, found = asyncio.run(_request_rotation(args, value))
    except Exception as exc:  # the Kubernetes client's config and API errors have no common base worth naming
        return _fail(f"cannot write to the Kubernetes API: {type(exc).__name__}: {exc}", EXIT_UNREACHABLE)
    if not found:
        return _fail(f"ServiceAccountCredential {namespace}/{args.name} not found", EXIT_REFUSED)
    how = "at once: the old secret stops working now" if args.now else "with the usual overlap"
    print(f"ServiceAccountCredential {namespace}/{args.name}: rotation requested ({ANNOTATION_ROTATE}={value}), {how}")
    return 0
