"""Build a compressed faiss index from a stream of chunks, never holding the whole set at once.

The first chunks are buffered until there are enough rows to train on, then every chunk is added
in arrival order (the buffered ones first), so row positions are arrival positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ifid_callback.index_faiss import FaissRows, FaissSettings

# A checked chunk: (B, D) rows and their (B,) int64 CPU ids, or None without ids.
Chunk = tuple[Tensor, Tensor | None]


def build_stream(
    first: Chunk,
    rest: Iterator[Chunk],
    plan: Callable[[int], tuple[str, int]],
    planned: int,
    cuda: bool,
    settings: FaissSettings,
) -> tuple[str, FaissRows, Tensor | None]:
    """Train on the first chunks, then add every chunk.

    Args:
        first: the first chunk (already checked).
        rest: the other chunks, checked as they are drawn.
        plan: rows -> (faiss factory string, rows to train on), for a set of that many rows.
        planned: the rows expected; when the stream ends inside the training buffer with fewer,
            the plan is redone for the rows actually seen.
        cuda: add and search on the GPU(s) when faiss has GPU support.
        settings: distance, seed and nprobe of the index.

    Returns:
        (the factory string built, the filled index, the (N,) ids in arrival order or None).
        ValueError when some chunks carry ids and others not.
    """
    kind, need = plan(planned)
    pending: list[Chunk] = [first]
    buffered = len(first[0])
    exhausted = False
    while buffered < need:
        item = next(rest, None)
        if item is None:
            exhausted = True
            break
        pending.append(item)
        buffered += len(item[0])
    if exhausted and buffered < planned:  # the whole set fitted in the buffer
        kind, need = plan(buffered)
    train = torch.cat([x.detach().to("cpu", torch.float32) for x, _ in pending])[:need]
    rows = FaissRows.trained(kind, first[0].shape[1], train, cuda, settings)
    del train
    given = any(i is not None for _, i in pending)
    stored_ids: list[Tensor] = []

    def add(x: Tensor, i: Tensor | None) -> None:
        if (i is not None) != given:
            raise ValueError("give ids with every batch or with none of them.")
        rows.add(x)
        if i is not None:
            stored_ids.append(i)

    for x, i in pending:
        add(x, i)
    pending.clear()
    for x, i in rest:
        add(x, i)
    ids = torch.cat(stored_ids) if (stored_ids and given) else None
    return kind, rows, ids
