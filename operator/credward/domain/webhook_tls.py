"""The webhook's own CA and serving certificate: issued with ``cryptography``, renewed by small pure checks.

The API server trusts the webhook through the ``caBundle`` of its
configurations, so a new CA must be in that bundle before anything it signed
is served, and an old CA must stay there until no replica serves what it
signed. :func:`decide` takes what is stored (one Secret, parsed into a
:class:`TLSState`), which CAs the configurations currently publish, and the
clock, and returns the state to store and when to look again. One step at a
time, in this order (cert-manager's trigger policies, reduced to ours):

1. nothing stored, or the signing CA already expired: a fresh CA and serving certificate;
2. the CA is past its renewal point: a *next* CA joins the bundle (nothing it signs is served yet);
3. the next CA has been published for ``overlap``: it becomes the signer and a serving
   certificate it signed replaces the old one; the old CA stays in the bundle as *previous*;
4. the previous CA has been kept for ``overlap`` (every replica reloaded meanwhile): it leaves the bundle;
5. the serving certificate is past its renewal point, names other hosts, or was signed by
   another CA: it is reissued by the current signer (the bundle already trusts it).

Renewal points are two thirds into a certificate's life, as cert-manager's default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credward.api import GROUP
from credward.domain.timefmt import parse_rfc3339

# Certificates start a little in the past, so a replica or API server whose clock is behind accepts them.
BACKDATE = dt.timedelta(minutes=5)

KEY_SERVING_CERT = "tls.crt"
KEY_SERVING_KEY = "tls.key"
KEY_BUNDLE = "ca.crt"  # what the API server must trust: previous + current + next CA
KEY_SIGNER_CERT = "signer.crt"
KEY_SIGNER_KEY = "signer.key"
KEY_NEXT_CERT = "next-signer.crt"
KEY_NEXT_KEY = "next-signer.key"
KEY_PREVIOUS_CERT = "previous-signer.crt"
ANNOTATION_TRUST_CHANGED = f"{GROUP}/trust-changed-at"


@dataclass(frozen=True, slots=True)
class Pem:
    """A certificate and its private key (PEM); the key never leaves the Secret and memory."""

    cert: bytes
    key: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER form: how logs and tests name a certificate."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def split_bundle(bundle: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, each as PEM."""
    return [c.public_bytes(serialization.Encoding.PEM) for c in x509.load_pem_x509_certificates(bundle)]


@dataclass(frozen=True, slots=True)
class TLSPolicy:
    ca_validity: dt.timedelta
    serving_validity: dt.timedelta
    overlap: dt.timedelta  # a bundle change is published this long before anything relies on it
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TLSState:
    signer: Pem
    serving: Pem
    next_signer: Pem | None = None
    previous_signer: bytes | None = None  # certificate only: it signs nothing any more
    trust_changed_at: dt.datetime | None = None

    @property
    def bundle(self) -> bytes:
        parts = [self.previous_signer, self.signer.cert, self.next_signer.cert if self.next_signer else None]
        return b"".join(p for p in parts if p)

    def secret_data(self) -> dict[str, bytes]:
        data = {
            KEY_SERVING_CERT: self.serving.cert,
            KEY_SERVING_KEY: self.serving.key,
            KEY_BUNDLE: self.bundle,
            KEY_SIGNER_CERT: self.signer.cert,
            KEY_SIGNER_KEY: self.signer.key,
        }
        if self.next_signer:
            data[KEY_NEXT_CERT], data[KEY_NEXT_KEY] = self.next_signer.cert, self.next_signer.key
        if self.previous_signer:
            data[KEY_PREVIOUS_CERT] = self.previous_signer
        return data

    @classmethod
    def from_secret(cls, data: Mapping[str, bytes], annotations: Mapping[str, str]) -> TLSState | None:
        """None when the Secret lacks a part or holds something unparsable (then a fresh state is made)."""
        try:
            state = cls(
                signer=Pem(data[KEY_SIGNER_CERT], data[KEY_SIGNER_KEY]),
                serving=Pem(data[KEY_SERVING_CERT], data[KEY_SERVING_KEY]),
                next_signer=Pem(data[KEY_NEXT_CERT], data[KEY_NEXT_KEY]) if KEY_NEXT_CERT in data else None,
                previous_signer=data.get(KEY_PREVIOUS_CERT),
                trust_changed_at=(
                    parse_rfc3339(annotations[ANNOTATION_TRUST_CHANGED])
                    if ANNOTATION_TRUST_CHANGED in annotations
                    else None
                ),
            )
            for pem in (state.signer, state.serving, state.next_signer):
                if pem is not None:
                    pem.certificate  # noqa: B018  (parses, or raises)
                    serialization.load_pem_private_key(pem.key, password=None)
            if state.previous_signer:
                x509.load_pem_x509_certificate(state.previous_signer)
        except (KeyError, ValueError):
            return None
        return state


@dataclass(frozen=True, slots=True)
class TLSPlan:
    state: TLSState
    reason: str  # "" when nothing changed
    wake_at: dt.datetime

    @property
    def changed(self) -> bool:
        return bool(self.reason)


# -- issuing ----------------------------------------------------------------------------------------


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue_ca(now: dt.datetime, validity: dt.timedelta) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"credward-webhook-ca@{int(now.timestamp())}")])
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving(signer: Pem, now: dt.datetime, policy: TLSPolicy) -> Pem:
    """A serving certificate for the policy's names, never outliving its signer."""
    ca_cert = signer.certificate
    ca_key = serialization.load_pem_private_key(signer.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in policy.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in policy.ip_addresses]
    common_name = (policy.dns_names or policy.ip_addresses or ("credward-webhook",))[0]
    not_after = min(now + policy.serving_validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# -- deciding ---------------------------------------------------------------------------------------


def renewal_point(cert: x509.Certificate) -> dt.datetime:
    """Two thirds into the certificate's life, counted from when it was issued (not from its backdate)."""
    not_after = cert.not_valid_after_utc
    issued = min(cert.not_valid_before_utc + BACKDATE, not_after)
    return not_after - (not_after - issued) / 3


def _names_of(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {str(i) for i in san.get_values_for_type(x509.IPAddress)}


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


Check = Callable[[TLSState | None, dt.datetime, TLSPolicy, frozenset[str]], TLSPlan | None]


def _fresh(state: TLSState | None, now: dt.datetime, policy: TLSPolicy, published: frozenset[str]) -> TLSPlan | None:
    if state is not None and now < state.signer.certificate.not_valid_after_utc:
        return None
    signer = issue_ca(now, policy.ca_validity)
    fresh = TLSState(signer=signer, serving=issue_serving(signer, now, policy), trust_changed_at=now)
    return TLSPlan(fresh, "issued a new CA and serving certificate" if state is None else "the CA had expired", now)


def _start_rollover(
    state: TLSState | None, now: dt.datetime, policy: TLSPolicy, published: frozenset[str]
) -> TLSPlan | None:
    assert state is not None
    if state.next_signer or state.previous_signer or now < renewal_point(state.signer.certificate):
        return None
    nxt = replace(state, next_signer=issue_ca(now, policy.ca_validity), trust_changed_at=now)
    return TLSPlan(nxt, "a next CA joined the trust bundle", now)


def _settled(state: TLSState, now: dt.datetime, policy: TLSPolicy) -> bool:
    return state.trust_changed_at is None or now >= state.trust_changed_at + policy.overlap


def _promote(state: TLSState | None, now: dt.datetime, policy: TLSPolicy, published: frozenset[str]) -> TLSPlan | None:
    assert state is not None
    if state.next_signer is None or not _settled(state, now, policy):
        return None
    # Only once the API server can trust it: every configuration publishes the next CA.
    if fingerprint(state.next_signer.cert) not in published:
        return None
    signer = state.next_signer
    promoted = TLSState(
        signer=signer,
        serving=issue_serving(signer, now, policy),
        previous_signer=state.signer.cert,
        trust_changed_at=now,
    )
    return TLSPlan(promoted, "the next CA now signs the serving certificate", now)


def _retire(state: TLSState | None, now: dt.datetime, policy: TLSPolicy, published: frozenset[str]) -> TLSPlan | None:
    assert state is not None
    if state.previous_signer is None or not _settled(state, now, policy):
        return None
    return TLSPlan(replace(state, previous_signer=None, trust_changed_at=now), "the previous CA left the bundle", now)


def _renew_serving(
    state: TLSState | None, now: dt.datetime, policy: TLSPolicy, published: frozenset[str]
) -> TLSPlan | None:
    assert state is not None
    cert = state.serving.certificate
    dns, ips = _names_of(cert)
    if dns != set(policy.dns_names) or ips != {str(ipaddress.ip_address(i)) for i in policy.ip_addresses}:
        reason = "the serving certificate named other hosts"
    elif not _signed_by(cert, state.signer.certificate):
        reason = "the serving certificate was signed by another CA"
    elif now >= renewal_point(cert):
        reason = "the serving certificate reached its renewal point"
    else:
        return None
    return TLSPlan(replace(state, serving=issue_serving(state.signer, now, policy)), reason, now)


CHECKS: tuple[Check, ...] = (_fresh, _start_rollover, _promote, _retire, _renew_serving)


def decide(state: TLSState | None, now: dt.datetime, policy: TLSPolicy, published: frozenset[str]) -> TLSPlan:
    """The first check that asks for a change, else the unchanged state and the earliest time one will.

    ``published`` holds the fingerprints of the CAs every webhook configuration trusts right now.
    """
    for check in CHECKS:
        plan = check(state, now, policy, published)
        if plan is not None:
            return plan
    assert state is not None
    wakes = [renewal_point(state.serving.certificate)]
    if state.next_signer is None and state.previous_signer is None:
        wakes.append(renewal_point(state.signer.certificate))
    elif state.trust_changed_at is not None:
        wakes.append(state.trust_changed_at + policy.overlap)
    return TLSPlan(state, "", max(now, min(wakes)))
