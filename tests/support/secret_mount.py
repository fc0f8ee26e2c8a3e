"""A kubelet stand-in: mirrors one Secret into a Secret-volume layout on disk, ``lag`` seconds after each change.

There are no nodes on the local control plane, so nothing mounts Secrets into
pods; this follows the Secret with ``kubectl get --watch`` (the real API
server's watch) and writes each version with
:func:`credward.devcluster.mount.write_secret_volume` (the ``..data`` swap)
``lag`` seconds after it was seen, as a kubelet's sync period delays it.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from credward.devcluster import ControlPlane
from credward.devcluster.mount import write_secret_volume


class SecretMount:
    def __init__(self, plane: ControlPlane, namespace: str, name: str, directory: Path, lag: float) -> None:
        self.directory = directory
        self.lag = lag
        self.updates = 0  # versions written to the volume
        self._cmd = [
            str(plane.binaries.kubectl),
            f"--kubeconfig={plane.kubeconfig}",
            "get",
            "secrets",
            "-n",
            namespace,
            f"--field-selector=metadata.name={name}",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ]
        self._pending: queue.Queue[tuple[float, dict[str, bytes]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads = [
            threading.Thread(target=self._watch, name=f"watch {name}", daemon=True),
            threading.Thread(target=self._write, name=f"mount {name}", daemon=True),
        ]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object, tb: TracebackType | None = None) -> None:
        self._stop.set()
        self._pending.put(None)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        for thread in self._threads:
            thread.join(timeout=10)

    def files(self) -> dict[str, bytes]:
        """What a pod reading the volume sees now."""
        if not (self.directory / "..data").exists():
            return {}
        return {p.name: p.read_bytes() for p in self.directory.iterdir() if not p.name.startswith("..")}

    def _watch(self) -> None:
        while not self._stop.is_set():  # a watch the server ends is started again, as a kubelet's would be
            self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert self._proc.stdout is not None
            decoder, buffer = json.JSONDecoder(), ""
            while chunk := os.read(self._proc.stdout.fileno(), 65536):
                buffer += chunk.decode()
                while True:
                    buffer = buffer.lstrip()
                    try:
                        event, end = decoder.raw_decode(buffer)
                    except json.JSONDecodeError:
                        break
                    buffer = buffer[end:]
                    self._seen(event)
            self._proc.wait()
            self._stop.wait(0.5)

    def _seen(self, event: dict[str, Any]) -> None:
        if event.get("type") not in ("ADDED", "MODIFIED"):
            return  # a deleted Secret: the kubelet keeps what the pod already has
        data = {k: base64.b64decode(v) for k, v in (event["object"].get("data") or {}).items()}
        self._pending.put((time.monotonic() + self.lag, data))

    def _write(self) -> None:
        last: dict[str, bytes] | None = None
        while (item := self._pending.get()) is not None:
            due, data = item
            if self._stop.wait(max(due - time.monotonic(), 0.0)):
                return
            if data != last:
                write_secret_volume(self.directory, data)
                last = data
                self.updates += 1
