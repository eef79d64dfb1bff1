"""The few torch.distributed helpers the bank, the metric and the monitor share."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def world_and_rank() -> tuple[int, int]:
    """(world size, rank) of the default process group, or (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def comm_device() -> torch.device:
    """Where collectives need their tensors: the current GPU for NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(value: Tensor) -> Tensor:
    """Sum of ``value`` over all ranks (a new tensor on ``value``'s device)."""
    buf = value.to(comm_device()).clone()
    torch.distributed.all_reduce(buf)
    return buf.to(value.device)


def gather_objects(obj: Any, group: Any = None) -> list[Any]:
    """``obj`` from every rank of ``group``, in rank order (pickled: small objects only)."""
    out: list[Any] = [None] * torch.distributed.get_world_size(group)
    torch.distributed.all_gather_object(out, obj, group=group)
    return out


def all_reduce_int(value: int, op: str = "sum") -> int:
    """``"sum"`` or ``"min"`` of a Python int over all ranks."""
    buf = torch.tensor([value], dtype=torch.long, device=comm_device())
    reduce_op = torch.distributed.ReduceOp.MIN if op == "min" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(buf, op=reduce_op)
    return int(buf.item())
