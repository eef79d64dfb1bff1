"""Probe files on disk: their formats, atomic writes, the checkpoint listing, and the check that
a checkpoint may be resumed under the current recipe."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from .probe_config import ProbeTrainConfig
from .sit import SiTConfig

__all__ = ["CKPT_FORMAT", "PROBE_FORMAT", "atomic_save", "check_resumable", "list_checkpoints"]

CKPT_FORMAT = "ifid-probe-checkpoint"
PROBE_FORMAT = "ifid-trained-probe"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")
# Fields that may change between a run and its resumption without changing the trajectory.
_RESUME_FREE_FIELDS = {"steps", "checkpoint_every", "keep_checkpoints", "log_every"}


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def check_resumable(
    state: dict[str, Any], config: ProbeTrainConfig, model_config: SiTConfig, path: Path
) -> None:
    if state.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a probe checkpoint; remove it or use another out_dir")
    saved = ProbeTrainConfig.from_dict(state["config"]).to_dict()
    now = config.to_dict()
    diff = sorted(k for k in now if k not in _RESUME_FREE_FIELDS and now[k] != saved.get(k))
    if diff:
        raise ValueError(
            f"cannot resume from {path}: config fields {diff} differ from the checkpoint's; "
            "use resume=False or another out_dir"
        )
    if state["model_config"] != model_config.to_dict():
        raise ValueError(
            f"cannot resume from {path}: the latents/labels imply a different model "
            f"({model_config.to_dict()} vs {state['model_config']})"
        )
