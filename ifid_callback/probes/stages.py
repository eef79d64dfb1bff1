"""The on-disk cache of a study: each stage's result under the settings it depends on
(``stages.json``), one line per computed stage in ``events.jsonl``, JSON written atomically, and
float32 arrays written to and read from memory-mapped ``.npy`` files.

One process writes a ``stages.json`` at a time (the study gives jobs that may run side by side,
such as two probe seeds of a VAE, files of their own); several may append to ``events.jsonl``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Stages", "finish_array", "load_array", "open_memmap", "write_json"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process's own: two shards writing the same file never share a temp file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


class Stages:
    """The ``stages.json`` of one VAE (or of the shared real-image stage).

    ``fallback``: an older file that may hold some of these stages (read, never written), so a
    study whose stages moved to a file of their own still finds what it computed before.
    """

    def __init__(self, path: Path, events: Path, fallback: Path | None = None) -> None:
        self.path = path
        self.events = events
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.older: dict[str, Any] = (
            json.loads(fallback.read_text()) if fallback is not None and fallback.is_file() else {}
        )

    def get(self, stage: str, key: dict[str, Any]) -> dict[str, Any] | None:
        entry = self.data.get(stage, self.older.get(stage))
        if entry is not None and entry.get("key") == key:
            return entry["result"]
        return None

    def put(self, stage: str, key: dict[str, Any], result: dict[str, Any], seconds: float) -> None:
        self.data[stage] = {"key": key, "result": result, "finished_at": _now(), "seconds": seconds}
        write_json(self.path, self.data)
        with self.events.open("a") as fh:
            fh.write(
                json.dumps(
                    {
                        "stage": stage,
                        "file": str(self.path.parent.name),
                        "seconds": round(seconds, 3),
                        "at": _now(),
                    }
                )
                + "\n"
            )

    def run(
        self, stage: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        cached = self.get(stage, key)
        if cached is not None:
            return cached
        started = time.time()
        result = compute()
        self.put(stage, key, result, time.time() - started)
        return result


def open_memmap(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def load_array(path: Path) -> np.ndarray:
    # Copy-on-write mapping: readable as a writable array (torch.from_numpy needs that) without
    # loading it or touching the file.
    return np.load(path, mmap_mode="c")


def finish_array(tmp_path: Path, array: np.ndarray, final: Path) -> None:
    if isinstance(array, np.memmap):
        array.flush()
    del array
    os.replace(tmp_path, final)
