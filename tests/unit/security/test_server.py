"""The corked transport: one write per loop iteration, flushed before close, nothing written after close."""

from __future__ import annotations

import asyncio

import pytest

from credward.security.server import CorkedTransport

pytestmark = pytest.mark.unit


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_iteration_become_one() -> None:
    real = RecordingTransport()
    corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(b"{}")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    corked.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[-1] == b"next"
    assert corked.get_extra_info("peername") == "info:peername"


async def test_close_flushes_first() -> None:
    real = RecordingTransport()
    corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"bye")
    corked.close()
    assert real.writes == [b"bye"]
    assert real.closed
    corked.write(b"late")
    await asyncio.sleep(0)
    assert real.writes == [b"bye"]
