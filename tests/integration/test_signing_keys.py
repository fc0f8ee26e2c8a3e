"""The shared Secrets and signing-key rotation against the real control plane, the real service and a real validator.

The operator bootstraps the hash-key and signing-keys Secrets in its own
namespace; a kubelet stand-in (:class:`tests.support.secret_mount.SecretMount`)
mounts them with a lag, and the security service reads its hash key and its
keys directory from those mounts, as in a cluster. Each test's operator
watches only its own namespace (where no credential lives), so it leaves
every other test's credentials alone.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from tests.conftest import OPERATOR_TEST_ENV
from tests.support.kube import events_for, get, wait_for
from tests.support.secret_mount import SecretMount
from tests.support.service import SecurityServer

from credward.api.admin import AccountIn, SecretHash
from credward.client import TokenValidator
from credward.client.errors import InvalidToken
from credward.devcluster import ControlPlane
from credward.devcluster.errors import ControlPlaneError
from credward.devcluster.processes import ChildProcess, operator_process
from credward.domain.jwk import SigningAlgorithm, generate_key, key_to_pem, kid_of, load_private_key
from credward.domain.secrets import hash_key_id, hash_secret, new_client_secret

pytestmark = pytest.mark.integration

HASH_SECRET, KEYS_SECRET = "credward-hash-key", "credward-signing-keys"
# Shortened periods: each key signs 14 s, is published 2 + 6 = 8 s before it signs, previous kept 6 + 5 + 1 = 12 s.
JWKS_CACHE, PROPAGATION, SKEW, PERIOD, MAX_TTL = 2.0, 6.0, 1.0, 14.0, 5
GARBAGE_PEM = b"-----BEGIN PRIVATE KEY-----\nZm9v\n-----END PRIVATE KEY-----\n"
MOUNT_LAG = 1.5  # well inside PROPAGATION, with the service's 0.5 s key reload on top


@dataclass
class Setup:
    plane: ControlPlane
    namespace: str
    state: Path
    service: SecurityServer  # not started: it reads the mounts of Secrets the operator has yet to create

    def operator(self, name: str = "operator", **env: str) -> ChildProcess:
        return operator_process(
            self.plane,
            security_base_url=self.service.base_url,
            hash_key_file=Path("unused"),
            token_file=self.service.token_file,
            log_path=self.state / f"{name}.log",
            namespaces=[self.namespace],
            env={
                **OPERATOR_TEST_ENV,
                "CREDWARD_HASH_KEY_FILE": "",
                "CREDWARD_POD_NAMESPACE": self.namespace,
                "CREDWARD_HASH_KEY_SECRET": HASH_SECRET,
                "CREDWARD_SIGNING_KEYS_SECRET": KEYS_SECRET,
                **env,
            },
        )

    def secret(self, name: str) -> dict[str, Any] | None:
        return get(self.plane, "secret", name, self.namespace)

    def data(self, name: str) -> dict[str, bytes]:
        obj = self.secret(name) or {}
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def mount(self, name: str, lag: float) -> SecretMount:
        return SecretMount(self.plane, self.namespace, name, self.state / "mounts" / name, lag)


@pytest.fixture
def setup(control_plane: ControlPlane, crds: list[str], namespace: str, tmp_path: Path) -> Setup:
    service = SecurityServer(
        tmp_path,
        keys_dir=tmp_path / "mounts" / KEYS_SECRET,
        hash_key_file=tmp_path / "mounts" / HASH_SECRET / "hash-key",
        extra_args=[f"--max-token-ttl={MAX_TTL}", "--key-reload-interval=0.5"],
    )
    return Setup(control_plane, namespace, tmp_path, service)


def create_secret(setup: Setup, name: str, files: dict[str, bytes]) -> None:
    args = [f"--from-file={key}={setup.state / key}" for key in files]
    for key, value in files.items():
        (setup.state / key).write_bytes(value)
    setup.plane.kubectl("create", "secret", "generic", name, "-n", setup.namespace, *args)


def jwks_kids(service: SecurityServer) -> set[str]:
    return {k["kid"] for k in httpx.get(f"{service.base_url}/jwks.json", timeout=10).json()["keys"]}


def register(service: SecurityServer, hash_key: bytes) -> tuple[str, str]:
    """An account put straight into the service (no credential: the secret is hashed with the bootstrapped key)."""
    client_id, secret = f"keys-{secrets.token_hex(4)}", new_client_secret()
    account = AccountIn(
        display_name="signing-key rotation",
        token_ttl_seconds=MAX_TTL,
        secrets=(SecretHash(id="s1", hash=hash_secret(hash_key, secret)),),
    )
    with service.admin() as http:
        http.put(
            f"/v1/admin/accounts/{client_id}", json=account.model_dump(mode="json", by_alias=True)
        ).raise_for_status()
    return client_id, secret


def test_the_operator_creates_both_secrets_and_the_service_runs_on_their_mounts(setup: Setup) -> None:
    with setup.operator() as op:
        keys = wait_for(lambda: setup.secret(KEYS_SECRET), "the signing-keys Secret")
        hash_secret_obj = wait_for(lambda: setup.secret(HASH_SECRET), "the hash-key Secret")
        data = setup.data(KEYS_SECRET)
        assert set(data) == {"current.pem"}
        annotations = keys["metadata"]["annotations"]
        kid = kid_of(load_private_key(data["current.pem"], "current.pem"))
        assert annotations["credward.io/current-key-id"] == kid
        assert annotations["credward.io/signing-keys-managed"] == "true"
        hash_key = setup.data(HASH_SECRET)["hash-key"]
        assert len(hash_key) == 64
        with setup.mount(KEYS_SECRET, 0.2) as km, setup.mount(HASH_SECRET, 0.2) as hm:
            wait_for(lambda: km.files() and hm.files(), "both Secrets mounted")
            with setup.service as service:
                assert jwks_kids(service) == {kid}
                assert service.info()["hashKeyId"] == hash_key_id(hash_key)
                client_id, secret = register(service, hash_key)
                assert service.token(client_id, secret).status_code == 200
        log = op.log_path.read_text()
        assert f"key id {hash_key_id(hash_key)}" in log  # the operator holds the key the service hashes with
        assert hash_key.decode() not in log
        assert data["current.pem"].decode().splitlines()[1] not in log
        versions = (keys["metadata"]["resourceVersion"], hash_secret_obj["metadata"]["resourceVersion"])
    with setup.operator("restarted") as again:  # a restart creates nothing and changes nothing
        wait_for(lambda: "signing keys from" in again.log_path.read_text(), "the restarted operator's startup")
        assert (
            (setup.secret(KEYS_SECRET) or {})["metadata"]["resourceVersion"],
            (setup.secret(HASH_SECRET) or {})["metadata"]["resourceVersion"],
        ) == versions


def test_supplied_secrets_are_used_and_never_rewritten(setup: Setup) -> None:
    supplied_key, pem = secrets.token_hex(24).encode(), key_to_pem(generate_key(SigningAlgorithm.ES256))
    create_secret(setup, HASH_SECRET, {"hash-key": supplied_key + b"\n"})
    create_secret(setup, KEYS_SECRET, {"current.pem": pem})
    before = {n: (setup.secret(n) or {})["metadata"]["resourceVersion"] for n in (HASH_SECRET, KEYS_SECRET)}
    short = {"CREDWARD_SIGNING_KEY_PERIOD": "3s", "CREDWARD_SIGNING_KEY_JWKS_CACHE": "1s"}
    with setup.operator(**short, CREDWARD_SIGNING_KEY_PROPAGATION="1s") as op:
        wait_for(lambda: "its keys are not rotated" in op.log_path.read_text(), "the rotation noticing the Secret")
        time.sleep(4)  # longer than a period: a managed Secret would have had a next key published by now
        log = op.log_path.read_text()
    assert f"key id {hash_key_id(supplied_key)}" in log
    assert supplied_key.decode() not in log
    assert {n: (setup.secret(n) or {})["metadata"]["resourceVersion"] for n in before} == before
    assert setup.data(KEYS_SECRET) == {"current.pem": pem}


@pytest.mark.parametrize(
    ("name", "files", "problem"),
    [
        (HASH_SECRET, {"hash-key": b"too-short"}, "must be at least 32 bytes"),
        (HASH_SECRET, {"other": b"x" * 64}, "has no data key 'hash-key'"),
        (
            KEYS_SECRET,
            {"current.pem": b"-----BEGIN PRIVATE KEY-----\nZm9v\n-----END PRIVATE KEY-----\n"},
            "current.pem",
        ),
        (KEYS_SECRET, {"next.pem": key_to_pem(generate_key(SigningAlgorithm.ES256))}, "no current.pem"),
    ],
)
def test_a_malformed_supplied_secret_stops_the_start_naming_it(
    setup: Setup, name: str, files: dict[str, bytes], problem: str
) -> None:
    create_secret(setup, name, files)
    op = setup.operator()
    with pytest.raises(ControlPlaneError, match="exited"):
        op.start()
    log = op.log_path.read_text()
    assert f"Secret {setup.namespace}/{name}" in log
    assert problem in log
    assert "too-short" not in log
    assert "Zm9v" not in log


def test_a_warm_validator_accepts_every_token_across_two_rotations(setup: Setup) -> None:
    """Tokens requested and verified continuously while the operator rotates the keys twice and retires one."""
    periods = {
        "CREDWARD_SIGNING_KEY_PERIOD": f"{PERIOD:.0f}s",
        "CREDWARD_SIGNING_KEY_JWKS_CACHE": f"{JWKS_CACHE:.0f}s",
        "CREDWARD_SIGNING_KEY_PROPAGATION": f"{PROPAGATION:.0f}s",
        "CREDWARD_SIGNING_KEY_CLOCK_SKEW": f"{SKEW:.0f}s",
    }
    with (
        setup.operator(**periods) as op,
        setup.mount(KEYS_SECRET, MOUNT_LAG) as keys_mount,
        setup.mount(HASH_SECRET, 0.0) as hash_mount,
    ):
        wait_for(lambda: keys_mount.files() and hash_mount.files(), "both Secrets mounted", timeout=60)
        with setup.service as service:
            client_id, secret = register(service, hash_mount.files()["hash-key"])
            report = rotate_while_validating(service, client_id, secret)
        log = op.log_path.read_text()
    assert report.rejected == [], report.rejected
    signing = [k for k in report.first_token if k != report.first_kid]
    assert len(signing) >= 2, f"two rotations expected, tokens were signed by {list(report.first_token)}"
    for kid in signing:  # published at least a JWKS cache time before it signed
        assert report.first_token[kid] - report.first_published[kid] >= JWKS_CACHE, kid
    assert report.retired, "a previous key should have been retired"
    for kid in report.retired:  # kept until every token it signed had expired
        assert report.last_published[kid] >= report.max_exp[kid], kid
    assert report.previous_checks > 0  # tokens of a previous key, verified by a cold validator before their exp
    reasons = {e["reason"] for e in events_for(setup.plane, setup.namespace, KEYS_SECRET)}
    assert {"SigningKeyPublished", "SigningKeyPromoted", "SigningKeyRetired"} <= reasons
    assert "published next key" in log
    assert "signs now" in log
    assert "retired previous key" in log
    assert "BEGIN PRIVATE KEY" not in log


@dataclass
class Report:
    first_kid: str
    rejected: list[str]
    first_token: dict[str, float]
    first_published: dict[str, float]
    last_published: dict[str, float]
    max_exp: dict[str, int]
    retired: set[str]
    previous_checks: int


def rotate_while_validating(service: SecurityServer, client_id: str, secret: str, timeout: float = 180) -> Report:
    warm = TokenValidator(
        service.base_url,
        audience=None,
        jwks_max_age=JWKS_CACHE,
        jwks_min_refresh_interval=JWKS_CACHE,
        leeway=SKEW,
    )
    warm.refresh_keys()
    published: dict[str, float] = {}
    last_published: dict[str, float] = {}
    first_token: dict[str, float] = {}
    max_exp: dict[str, int] = {}
    latest: dict[str, str] = {}  # kid -> the newest token it signed
    rejected: list[str] = []
    retired: set[str] = set()
    previous_checks = 0
    first_kid: str | None = None
    deadline = time.monotonic() + timeout
    with warm:
        while time.monotonic() < deadline:
            now = time.time()
            kids = jwks_kids(service)
            for kid in kids:
                published.setdefault(kid, now)
                last_published[kid] = now
            retired |= {k for k in published if k not in kids}
            resp = service.token(client_id, secret)
            assert resp.status_code == 200, resp.text
            token = resp.json()["access_token"]
            kid = jwt.get_unverified_header(token)["kid"]
            exp = int(jwt.decode(token, options={"verify_signature": False})["exp"])
            first_kid = first_kid or kid
            first_token.setdefault(kid, time.time())
            max_exp[kid] = max(max_exp.get(kid, 0), exp)
            latest[kid] = token
            try:
                warm.verify(token)
            except InvalidToken as exc:
                rejected.append(f"{kid}: {exc}")
            for old_kid, old in latest.items():
                if old_kid != kid and old_kid not in retired and time.time() < max_exp[old_kid] - 0.5:
                    with TokenValidator(service.base_url, audience=None, leeway=SKEW) as cold:
                        try:
                            cold.verify(old)
                        except InvalidToken as exc:
                            rejected.append(f"previous {old_kid}: {exc}")
                    previous_checks += 1
            if len(first_token) >= 3 and retired:
                break
            time.sleep(0.2)
    assert first_kid is not None
    return Report(first_kid, rejected, first_token, published, last_published, max_exp, retired, previous_checks)


def test_a_restart_between_publishing_and_promoting_neither_repeats_nor_skips_a_step(setup: Setup) -> None:
    periods = {
        "CREDWARD_SIGNING_KEY_PERIOD": f"{PERIOD:.0f}s",
        "CREDWARD_SIGNING_KEY_JWKS_CACHE": f"{JWKS_CACHE:.0f}s",
        "CREDWARD_SIGNING_KEY_PROPAGATION": f"{PROPAGATION:.0f}s",
    }

    def annotations() -> dict[str, str]:
        return dict(((setup.secret(KEYS_SECRET) or {}).get("metadata") or {}).get("annotations") or {})

    with setup.operator(**periods):
        wait_for(lambda: annotations().get("credward.io/next-key-id"), "a next key", timeout=60)
    before = annotations()
    with setup.operator("restarted", **periods) as again:
        wait_for(
            lambda: annotations().get("credward.io/current-key-id") == before["credward.io/next-key-id"],
            "the published key promoted by the restarted operator",
            timeout=60,
        )
        log = again.log_path.read_text()
    after = annotations()
    published = datetime.fromisoformat(before["credward.io/next-key-published-at"].replace("Z", "+00:00"))
    promoted = datetime.fromisoformat(after["credward.io/current-key-promoted-at"].replace("Z", "+00:00"))
    assert promoted - published >= timedelta(seconds=JWKS_CACHE + PROPAGATION)  # the wait was not reset, nor cut
    assert after["credward.io/previous-key-id"] == before["credward.io/current-key-id"]
    assert "published next key" not in log.split("signs now")[0]  # the restarted operator published nothing first
