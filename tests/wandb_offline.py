"""Reading what a Weights & Biases run logged in offline mode (no network, no account)."""

from __future__ import annotations

import glob
import json
import os
import struct


def history(root: str | os.PathLike) -> list[dict]:
    """The ``run.log`` rows of the newest offline run under ``root`` (``<root>/wandb/...``).

    The run file is a LevelDB-style log (32 KiB blocks of checksummed chunks after a 7-byte
    ``:W&B`` header) of ``wandb_internal_pb2.Record`` messages; history rows map each key
    (nested keys joined with ``/``) to its JSON value.
    """
    from wandb.proto import wandb_internal_pb2

    files = sorted(glob.glob(os.path.join(root, "**", "run-*.wandb"), recursive=True))
    assert files, f"no offline W&B run under {root}"
    data = open(files[-1], "rb").read()
    assert data[:4] == b":W&B", "not a W&B run file"
    rows, pos, block, buf = [], 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk  # full/first, then middle/last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows
