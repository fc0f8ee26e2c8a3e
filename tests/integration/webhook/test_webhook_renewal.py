"""Certificate renewal under load: serving certificates and CAs roll over while pods keep being admitted.

Lifetimes are shortened through settings (CA 18 s, serving 9 s, overlap 2 s) so a
30 s loop sees several serving renewals and at least one whole CA rollover; with
``failurePolicy: Fail`` for opted-in pods, any certificate the API server did not
trust would refuse a pod.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tests.integration.webhook.conftest import WebhookProcess, start_webhook
from tests.integration.webhook.helpers import INJECT, create, credential, pod

from credward.devcluster import ControlPlane
from credward.domain.webhook_tls import fingerprint


@pytest.fixture(scope="module")
def short_lived(
    control_plane: ControlPlane, crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookProcess]:
    yield from start_webhook(
        control_plane,
        tmp_path_factory.mktemp("webhook-renewal"),
        "renew",
        ca_validity="18s",
        cert_validity="9s",
        overlap="2s",
        sync_interval="500ms",
    )


def served_certificate(webhook: WebhookProcess) -> bytes:
    """The certificate a fresh TLS handshake gets, as PEM (verified against the stored bundle)."""
    ctx = ssl.create_default_context(cadata=webhook.tls_secret()["ca.crt"].decode())
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def test_renewal_while_pods_are_created_admits_every_pod(
    control_plane: ControlPlane, short_lived: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "steady")
    serving, cas, failures = set(), set(), []
    created = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        proc = create(
            control_plane,
            namespace,
            pod(f"p-{created}", labels=INJECT, annotations={"credward.io/credential": "steady"}),
        )
        if proc.returncode != 0 or "credward-steady" not in proc.stdout:
            failures.append(proc.stderr.strip() or "not injected")
        created += 1
        stored = short_lived.tls_secret()
        serving.add(fingerprint(stored["tls.crt"]))
        cas.add(fingerprint(stored["signer.crt"]))
    assert failures == [], f"{len(failures)} of {created} pods failed"
    assert created >= 40
    assert len(serving) >= 4  # several serving certificates were used...
    assert len(cas) >= 2  # ...and at least one CA rollover completed
    # What a new handshake gets is what the Secret holds: renewals reach the server without a restart.
    # (Read the Secret before and after the handshake: a renewal may fall in between.)
    for _ in range(10):
        before = fingerprint(short_lived.tls_secret()["tls.crt"])
        served = fingerprint(served_certificate(short_lived))
        if before == fingerprint(short_lived.tls_secret()["tls.crt"]):
            break
    assert served == before
    log = short_lived.log_path.read_text()
    # The private keys appear nowhere in the log: neither as PEM nor as the Secret's base64.
    for key in (stored["tls.key"], stored["signer.key"]):
        assert key.splitlines()[1].decode() not in log
        assert base64.b64encode(key).decode()[:40] not in log
    assert "a next CA joined the trust bundle" in log
    assert "the next CA now signs the serving certificate" in log
    assert "the previous CA left the bundle" in log


def test_a_second_replica_serves_the_certificate_of_the_first(
    control_plane: ControlPlane, short_lived: WebhookProcess, tmp_path: Path
) -> None:
    replicas = start_webhook(
        control_plane,
        tmp_path,
        "replica",
        namespace=short_lived.namespace,
        ca_validity="18s",
        cert_validity="9s",
        overlap="2s",
        sync_interval="500ms",
    )
    second = next(replicas)
    try:
        # Both follow the one Secret: within a sync interval they serve the same certificate.
        for _ in range(20):
            if fingerprint(served_certificate(second)) == fingerprint(served_certificate(short_lived)):
                break
            time.sleep(0.25)
        assert fingerprint(served_certificate(second)) == fingerprint(served_certificate(short_lived))
    finally:
        replicas.close()
