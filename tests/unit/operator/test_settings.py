"""OperatorSettings: read once, fail loudly naming the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from credward.operator.settings import OperatorSettings, SettingsError, read_hash_key


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    key, token = tmp_path / "hash.key", tmp_path / "token"
    key.write_text("k" * 64 + "\n")
    token.write_text("t")
    return {"CREDWARD_HASH_KEY_FILE": str(key), "CREDWARD_SECURITY_TOKEN_FILE": str(token)}


def test_defaults_and_endpoints(env: dict[str, str]) -> None:
    s = OperatorSettings.from_env(env)
    assert s.endpoints.token_url == "http://credward-security:9000/oauth2/token"
    assert s.endpoints.issuer == "http://credward-security:9000"
    assert s.namespaces == ()
    assert s.cleanup_timeout == timedelta(hours=1)
    assert s.backoff_max == timedelta(minutes=5)


def test_the_hash_key_is_read_as_the_service_reads_it(env: dict[str, str]) -> None:
    assert read_hash_key(Path(env["CREDWARD_HASH_KEY_FILE"])) == b"k" * 64  # stripped


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"CREDWARD_SECURITY_BASE_URL": "ftp://x"}, "CREDWARD_SECURITY_BASE_URL"),
        ({"CREDWARD_RESYNC": "often"}, "CREDWARD_RESYNC"),
        ({"CREDWARD_CLEANUP_TIMEOUT": "-1s"}, "CREDWARD_CLEANUP_TIMEOUT"),
        ({"CREDWARD_HASH_KEY_FILE": ""}, "CREDWARD_HASH_KEY_FILE"),
        ({"CREDWARD_HASH_KEY_FILE": "/nonexistent/key"}, "CREDWARD_HASH_KEY_FILE"),
        ({"CREDWARD_SECURITY_TOKEN_FILE": "/nonexistent/token"}, "CREDWARD_SECURITY_TOKEN_FILE"),
        ({"CREDWARD_LIVENESS_PORT": "eighty"}, "CREDWARD_LIVENESS_PORT"),
    ],
)
def test_bad_values_name_their_key(env: dict[str, str], change: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError, match=key):
        OperatorSettings.from_env({**env, **change})


def test_short_hash_key_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("too short")
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        OperatorSettings.from_env({**env, "CREDWARD_HASH_KEY_FILE": str(short)})


def test_restart_settings(env: dict[str, str]) -> None:
    defaults = OperatorSettings.from_env(env)
    assert (defaults.restart_debounce, defaults.restart_max_wait) == (timedelta(seconds=2), timedelta(minutes=1))
    given = OperatorSettings.from_env({**env, "CREDWARD_RESTART_DEBOUNCE": "5s", "CREDWARD_RESTART_MAX_WAIT": "10m"})
    assert (given.restart_debounce, given.restart_max_wait) == (timedelta(seconds=5), timedelta(minutes=10))
    with pytest.raises(SettingsError, match="CREDWARD_RESTART_MAX_WAIT"):
        OperatorSettings.from_env({**env, "CREDWARD_RESTART_MAX_WAIT": "soon"})


def test_the_kubernetes_rate_limit_is_read_and_checked(env: dict[str, str]) -> None:
    s = OperatorSettings.from_env(env)
    assert (s.kube_qps, s.kube_burst) == (500.0, 1000)
    s = OperatorSettings.from_env({**env, "CREDWARD_KUBE_QPS": "0", "CREDWARD_KUBE_BURST": "5"})
    assert (s.kube_qps, s.kube_burst) == (0.0, 5)
    for change, key in (
        ({"CREDWARD_KUBE_QPS": "fast"}, "CREDWARD_KUBE_QPS"),
        ({"CREDWARD_KUBE_QPS": "-1"}, "CREDWARD_KUBE_QPS"),
        ({"CREDWARD_KUBE_QPS": "nan"}, "CREDWARD_KUBE_QPS"),
        ({"CREDWARD_KUBE_BURST": "0"}, "CREDWARD_KUBE_BURST"),
        ({"CREDWARD_KUBE_BURST": "1.5"}, "CREDWARD_KUBE_BURST"),
    ):
        with pytest.raises(SettingsError, match=key):
            OperatorSettings.from_env({**env, **change})
