"""Settings from the environment, and the secret file re-read when the kubelet swaps ``..data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from credward.client import ClientConfigError, ClientSettings
from credward.client.credentials import SecretFile

pytestmark = pytest.mark.unit


def kubelet_mount(root: Path, values: dict[str, str], stamp: str) -> None:
    """Write ``values`` as the kubelet does: a timestamped directory, then an atomic swap of ``..data``."""
    version = root / stamp
    version.mkdir(parents=True)
    for key, value in values.items():
        (version / key).write_text(value)
    os.symlink(stamp, root / "..data_tmp")
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.rename(root / "..data_tmp", root / "..data")
    for key in values:
        if not (root / key).is_symlink():
            os.symlink(f"..data/{key}", root / key)
    if old is not None:
        for child in (root / old).iterdir():
            child.unlink()
        (root / old).rmdir()


def test_from_env_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match="CLIENT_SECRET_PATH"):
        ClientSettings.from_env({})
    with pytest.raises(ClientConfigError, match="SECURITY_BASE_URL"):
        ClientSettings.from_env({"CLIENT_SECRET_PATH": str(tmp_path / "client-secret")})
    settings = ClientSettings.from_env(
        {"CLIENT_SECRET_PATH": "/m/client-secret", "SECURITY_BASE_URL": "https://s", "CLIENT_ID": "c"},
        client_id="override",
    )
    assert settings == ClientSettings(Path("/m/client-secret"), "override", "https://s", None)


def test_the_data_swap_is_picked_up_and_the_client_id_read_beside_it(tmp_path: Path) -> None:
    kubelet_mount(tmp_path, {"client-id": "c1", "client-secret": "first\n"}, "..2026_12_01_15_00_00.123456789")
    assert (tmp_path / "..data").is_symlink()
    secret = SecretFile(ClientSettings(tmp_path / "client-secret"))
    first = secret.current()
    assert (first.client_id, first.secret, first.generation) == ("c1", "first", 1)
    assert secret.current() is first  # unchanged: nothing re-read
    kubelet_mount(tmp_path, {"client-id": "c1", "client-secret": "second"}, "..2026_12_01_16_00_00.000000001")
    second = secret.current()
    assert (second.secret, second.generation) == ("second", 2)
    assert "second" not in repr(second)


def test_unreadable_or_empty_secret(tmp_path: Path) -> None:
    missing = SecretFile(ClientSettings(tmp_path / "nope", client_id="c"))
    with pytest.raises(ClientConfigError, match="nope"):
        missing.current()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ClientConfigError, match="empty"):
        SecretFile(ClientSettings(tmp_path / "empty", client_id="c")).current()
