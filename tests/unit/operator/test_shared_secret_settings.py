"""Settings of the shared Secrets and of signing-key rotation: defaults, and each mistake named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from credward.domain.jwk import SigningAlgorithm
from credward.operator.settings import OperatorSettings, SettingsError

pytestmark = pytest.mark.unit


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "token"
    token.write_text("t")
    return {
        "CREDWARD_SECURITY_TOKEN_FILE": str(token),
        "CREDWARD_POD_NAMESPACE": "credward",
        "CREDWARD_HASH_KEY_SECRET": "credward-hash-key",
        "CREDWARD_SIGNING_KEYS_SECRET": "credward-signing-keys",
    }


def test_secrets_replace_the_hash_key_file_and_rotation_has_defaults(env: dict[str, str]) -> None:
    s = OperatorSettings.from_env(env)
    assert s.hash_key_file is None
    assert (s.pod_namespace, s.hash_key_secret, s.signing_keys_secret) == (
        "credward",
        "credward-hash-key",
        "credward-signing-keys",
    )
    assert s.signing_key_alg is SigningAlgorithm.ES256
    assert s.signing_key_period == timedelta(days=30)
    assert s.signing_key_jwks_cache == timedelta(minutes=5)
    assert s.signing_key_propagation == timedelta(minutes=2)
    assert s.signing_key_clock_skew == timedelta(minutes=1)


def test_shortened_periods_for_tests(env: dict[str, str]) -> None:
    s = OperatorSettings.from_env(
        {
            **env,
            "CREDWARD_SIGNING_KEY_PERIOD": "14s",
            "CREDWARD_SIGNING_KEY_JWKS_CACHE": "2s",
            "CREDWARD_SIGNING_KEY_PROPAGATION": "6s",
            "CREDWARD_SIGNING_KEY_CLOCK_SKEW": "1s",
            "CREDWARD_SIGNING_KEY_ALG": "EdDSA",
        }
    )
    assert s.signing_key_period == timedelta(seconds=14)
    assert s.signing_key_alg is SigningAlgorithm.EDDSA


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"CREDWARD_POD_NAMESPACE": ""}, "CREDWARD_HASH_KEY_SECRET needs CREDWARD_POD_NAMESPACE"),
        ({"CREDWARD_HASH_KEY_SECRET": ""}, "CREDWARD_HASH_KEY_FILE or CREDWARD_HASH_KEY_SECRET is required"),
        ({"CREDWARD_HASH_KEY_FILE": "/some/file"}, "both set"),
        ({"CREDWARD_SIGNING_KEYS_SECRET": "Not_A_Name"}, "CREDWARD_SIGNING_KEYS_SECRET: 'Not_A_Name'"),
        ({"CREDWARD_SIGNING_KEY_ALG": "HS256"}, "CREDWARD_SIGNING_KEY_ALG: 'HS256' is not one of"),
        ({"CREDWARD_SIGNING_KEY_PERIOD": "soon"}, "CREDWARD_SIGNING_KEY_PERIOD"),
        ({"CREDWARD_SIGNING_KEY_PERIOD": "6m"}, "must be at least"),  # 5m cache + 2m propagation
    ],
)
def test_mistakes_are_named(env: dict[str, str], change: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        OperatorSettings.from_env({**env, **change})


def test_the_signing_keys_secret_needs_the_pod_namespace_with_a_hash_key_file_too(
    env: dict[str, str], tmp_path: Path
) -> None:
    key = tmp_path / "hash.key"
    key.write_text("k" * 64)
    change = {"CREDWARD_HASH_KEY_SECRET": "", "CREDWARD_POD_NAMESPACE": "", "CREDWARD_HASH_KEY_FILE": str(key)}
    with pytest.raises(SettingsError, match="CREDWARD_SIGNING_KEYS_SECRET needs CREDWARD_POD_NAMESPACE"):
        OperatorSettings.from_env({**env, **change})
    assert OperatorSettings.from_env({**env, **change, "CREDWARD_SIGNING_KEYS_SECRET": ""}).hash_key_file == key
