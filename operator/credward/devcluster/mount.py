"""A Secret laid out on disk exactly as the kubelet mounts a Secret volume.

The kubelet writes each update into a fresh hidden directory
(``..2026_12_01_15_00_00.123456789``), points the ``..data`` symlink at it with
one atomic rename, and exposes every key as a symlink ``<key> -> ..data/<key>``.
A reader that re-opens ``client-secret`` therefore sees either the old or the
new value, never a mix — the layout ``credward.client`` is built for. There are
no nodes on the local control plane, so ``make demo`` (and tests) lay it out here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

DATA_LINK = "..data"


def write_secret_volume(directory: Path, files: Mapping[str, bytes], *, now: datetime | None = None) -> Path:
    """Create or atomically update the volume at ``directory``; returns it.

    Files are mode 0400 as with the default ``defaultMode`` of a Secret
    volume; the previous timestamped directory is removed after the swap.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    payload = directory / stamp
    while payload.exists():  # two updates within a microsecond
        stamp += "0"
        payload = directory / stamp
    payload.mkdir(mode=0o755)
    for key, value in files.items():
        target = payload / key
        target.write_bytes(value)
        target.chmod(0o400)
    link = directory / DATA_LINK
    previous = os.readlink(link) if link.is_symlink() else None
    tmp = directory / f"{DATA_LINK}_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(stamp)
    tmp.replace(link)  # rename(2): the atomic swap readers rely on
    for key in files:
        user_link = directory / key
        if not user_link.is_symlink():
            user_link.symlink_to(Path(DATA_LINK) / key)
    for stale in directory.iterdir():
        if stale.is_symlink() and stale.name not in files and stale.name != DATA_LINK:
            stale.unlink()  # a key that left the Secret
    if previous and previous != stamp:
        shutil.rmtree(directory / previous, ignore_errors=True)
    return directory
