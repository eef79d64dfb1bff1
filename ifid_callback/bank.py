"""A fixed-capacity FIFO bank of flattened latents, each row with an id and its insertion step."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from ifid_callback.distributed import comm_device, world_and_rank

_STORAGE_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in _STORAGE_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _STORAGE_DTYPES:
        return _STORAGE_DTYPES[dtype]
    raise ValueError(f"dtype must be one of fp32, fp16, bf16 (or the torch dtypes), got {dtype!r}.")


#: The insertion step of a row added without one (``add(..., step=None)``, older checkpoints).
UNKNOWN_STEP = -1


def _as_steps(step: int | Tensor | None, batch: int) -> Tensor:
    """(batch,) int64 insertion steps from ``step``: an int >= 0, a (batch,) tensor of them, or
    None (:data:`UNKNOWN_STEP`)."""
    if step is None:
        return torch.full((batch,), UNKNOWN_STEP, dtype=torch.long)
    if isinstance(step, Tensor):
        steps = step.detach().reshape(-1).cpu()
        if steps.dtype.is_floating_point or steps.dtype == torch.bool or steps.numel() != batch:
            raise ValueError(
                f"step must be an int or a ({batch},) integer tensor (one step per latent), got "
                f"dtype {steps.dtype} with {steps.numel()} values."
            )
        steps, lowest = steps.to(torch.long), UNKNOWN_STEP  # a restored row may be unknown
    elif isinstance(step, int) and not isinstance(step, bool):
        steps, lowest = torch.full((batch,), step, dtype=torch.long), 0
    else:
        raise TypeError(f"step must be an int (the training step) or None, got {step!r}.")
    if len(steps) and int(steps.min()) < lowest:
        raise ValueError(
            f"step must be >= 0 (the global training step), got {int(steps.min())}; pass "
            "step=None when the step is not known."
        )
    return steps


class BankRows:
    """The rows of a bank as they were when :meth:`LatentBank.snapshot` was taken, uncopied.

    It shares the bank's storage; just before the bank overwrites a row, that row is copied
    here, so :meth:`rows` always returns the rows of the moment of the snapshot. Memory: nothing
    at first, then one row for each row the bank overwrites while the snapshot is alive.
    """

    def __init__(self, storage: Tensor, size: int) -> None:
        self._storage = storage
        self._size = size
        self._saved_at: Tensor | None = None  # (size,) position in the saved rows, -1: unsaved
        self._saved: list[Tensor] = []
        self._count = 0

    def __len__(self) -> int:
        return self._size

    def _preserve(self, slots: Tensor) -> None:
        """Called by the bank before it writes ``slots`` (distinct storage rows)."""
        slots = slots[slots < self._size]
        if self._saved_at is None:
            if not len(slots):
                return
            self._saved_at = torch.full(
                (self._size,), -1, dtype=torch.long, device=self._storage.device
            )
        slots = slots[self._saved_at[slots] < 0]
        if not len(slots):
            return
        self._saved.append(self._storage[slots])  # advanced indexing copies
        self._saved_at[slots] = torch.arange(
            self._count, self._count + len(slots), device=self._storage.device
        )
        self._count += len(slots)

    def rows(self, positions: Tensor) -> Tensor:
        """Rows at ``positions`` (int64, any shape; 0 <= p < len) as of the snapshot, on the
        bank's device and in its storage dtype: shape ``(*positions.shape, dim)``."""
        positions = positions.to(self._storage.device)
        out = self._storage[positions]
        if self._saved_at is not None:
            at = self._saved_at[positions]
            hit = at >= 0
            if bool(hit.any()):
                if len(self._saved) > 1:
                    self._saved = [torch.cat(self._saved)]
                out[hit] = self._saved[0][at[hit]]
        return out


class LatentBank:
    """Rolling reference set of latents for nearest-neighbour search.

    Latents of any shape (B, ...) are flattened to rows of ``dim`` values and kept in a ring
    buffer of ``capacity`` rows: once full, each new row replaces the oldest one, so the bank is
    never staler than the last ``capacity`` insertions. Every row carries an int64 id (given by
    the caller, e.g. a dataset index, or numbered automatically) so that a query can be kept
    from matching itself by id rather than by distance, and the training step at which it was
    inserted (:attr:`steps`; :data:`UNKNOWN_STEP` when not given), so that the age of the
    neighbours an evaluation used can be told.

    Args:
        capacity: maximum number of rows kept (>= 1).
        dtype: storage dtype, ``"fp32"``, ``"fp16"`` or ``"bf16"``; halves memory at 16 bits.
        device: where rows are stored (the search runs there when exact).

    Example:
        >>> bank = LatentBank(capacity=4)
        >>> ids = bank.add(torch.randn(3, 2, 2, 2))
        >>> len(bank), bank.dim
        (3, 8)
    """

    def __init__(
        self,
        capacity: int = 50_000,
        dtype: torch.dtype | str = "fp32",
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}.")
        self.capacity = capacity
        self.dtype = _resolve_dtype(dtype)
        self.device = torch.device(device)
        self.latent_shape: tuple[int, ...] | None = None
        self._vectors: Tensor | None = None
        self._ids: Tensor | None = None
        self._steps: Tensor | None = None
        self._size = 0
        self._cursor = 0
        # Automatic ids are >= this: above every id issued, given or restored so far.
        self._next_id = 0
        # Number of changes so far, for display only: a new or restored bank can repeat it.
        self.version = 0
        # Identities of the contents (see `token` and `lineage`): fresh objects, compared with `is`.
        self._token = object()
        self._lineage = object()
        # Live snapshots of the current storage: each keeps the rows the bank overwrites.
        self._snapshots: weakref.WeakSet[BankRows] = weakref.WeakSet()

    # ------------------------------------------------------------------ identity
    @property
    def token(self) -> object:
        """Identity of the bank's current contents, to compare with ``is``.

        A new object after every change (``add``, ``clear``, ``load_state_dict``) and in every new
        bank, so it can never equal the token of other contents while anyone holds it: a cache
        built from the bank is valid exactly while ``cached_token is bank.token``.
        """
        return self._token

    @property
    def lineage(self) -> object:
        """Like :attr:`token`, but kept by ``add``: replaced only when the contents are replaced
        wholesale (``clear``, ``load_state_dict``) and in every new bank."""
        return self._lineage

    def _changed(self, replaced: bool = False) -> None:
        self.version += 1
        self._token = object()
        if replaced:
            self._lineage = object()

    def snapshot(self) -> BankRows:
        """The current rows, frozen without a copy (see :class:`BankRows`); positions are those of
        :attr:`vectors` now. Later changes of the bank do not change what it returns."""
        if self._vectors is None:
            raise ValueError("The bank is empty; add latents first.")
        snap = BankRows(self._vectors, self._size)
        self._snapshots.add(snap)
        return snap

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Weak references do not pickle: the live snapshots travel as a list, so that a copy
        # taken together with a snapshot's holder (a metric's deepcopy, pickle or torch.save)
        # keeps preserving that holder's copy of the rows before it overwrites them.
        state["_snapshots"] = list(self._snapshots)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        snapshots = state.pop("_snapshots", None) or []
        self.__dict__.update(state)
        self._snapshots = weakref.WeakSet(snapshots)

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return self._size

    @property
    def dim(self) -> int | None:
        """Number of values per flattened row, or None before the first ``add``."""
        return None if self.latent_shape is None else int(torch.Size(self.latent_shape).numel())

    @property
    def vectors(self) -> Tensor:
        """Stored rows, shape (len(bank), dim), in storage dtype (a view, do not modify)."""
        if self._vectors is None:
            return torch.empty(0, 0, dtype=self.dtype, device=self.device)
        return self._vectors[: self._size]

    @property
    def ids(self) -> Tensor:
        """Row ids, shape (len(bank),), int64, aligned with :attr:`vectors`."""
        if self._ids is None:
            return torch.empty(0, dtype=torch.long, device=self.device)
        return self._ids[: self._size]

    @property
    def steps(self) -> Tensor:
        """Training step at which each row was inserted, shape (len(bank),), int64 on the CPU,
        aligned with :attr:`vectors`; :data:`UNKNOWN_STEP` (-1) where none was given."""
        if self._steps is None:
            return torch.empty(0, dtype=torch.long)
        return self._steps[: self._size]

    def latents(self) -> Tensor:
        """Stored rows reshaped to the latent shape, (len(bank), *latent_shape)."""
        if self.latent_shape is None:
            raise ValueError("The bank is empty; add latents first.")
        return self.vectors.reshape(len(self), *self.latent_shape)

    def memory_bytes(self) -> int:
        """Bytes held by the row storage and ids on the bank's device (allocated for the full
        capacity on first add); the insertion steps add 8 bytes per row on the CPU."""
        if self._vectors is None:
            return 0
        return self._vectors.numel() * self._vectors.element_size() + self._ids.numel() * 8

    # ------------------------------------------------------------------ updates
    def add(
        self, latents: Tensor, ids: Tensor | None = None, step: int | Tensor | None = None
    ) -> Tensor:
        """Insert a batch of latents, overwriting the oldest rows once full.

        Args:
            latents: (B, ...) floating tensor; every batch must have the same per-sample shape.
            ids: optional (B,) integer ids. When omitted, ids are numbered automatically: each
                rank takes ids ``q * world_size + rank`` (so ranks never collide) above every id
                this bank has issued, been given or restored, so they stay unique after a resume
                on any world size.
            step: the global training step of this batch (int >= 0), or a (B,) tensor of one
                step per latent; None: unknown (:data:`UNKNOWN_STEP`).

        Returns:
            The (B,) int64 ids of the inserted rows.
        """
        if not isinstance(latents, Tensor) or not latents.is_floating_point():
            raise TypeError(
                f"latents must be a floating-point tensor, got {type(latents).__name__}."
            )
        if latents.ndim < 2 or latents.shape[0] == 0:
            raise ValueError(
                f"latents must be a non-empty batch of shape (B, ...), got {tuple(latents.shape)}."
            )
        shape = tuple(latents.shape[1:])
        if self.latent_shape is not None and shape != self.latent_shape:
            raise ValueError(
                f"latents have per-sample shape {shape} but the bank holds {self.latent_shape}; "
                "use one bank per latent shape."
            )
        batch = latents.shape[0]
        flat = latents.detach().reshape(batch, -1)
        if not torch.isfinite(flat).all():
            raise ValueError("latents contain NaN or Inf; the encoder output is not finite.")
        if ids is None:
            world, rank = world_and_rank()
            first = max(0, -(-(self._next_id - rank) // world))  # smallest q with id >= floor
            counters = torch.arange(first, first + batch, dtype=torch.long)
            new_ids = counters * world + rank
        else:
            new_ids = torch.as_tensor(ids).detach().reshape(-1)
            if new_ids.dtype.is_floating_point or new_ids.dtype == torch.bool:
                raise TypeError(f"ids must be integers, got dtype {new_ids.dtype}.")
            if new_ids.numel() != batch:
                raise ValueError(
                    f"got {new_ids.numel()} ids for {batch} latents; pass one id per latent."
                )
            new_ids = new_ids.to(torch.long)
        new_steps = _as_steps(step, batch)
        next_id = max(self._next_id, int(new_ids.max()) + 1)
        # All checks passed: from here on the bank changes.
        if self._vectors is None:
            self.latent_shape = shape
            self._vectors = torch.empty(
                self.capacity, flat.shape[1], dtype=self.dtype, device=self.device
            )
            self._ids = torch.empty(self.capacity, dtype=torch.long, device=self.device)
            self._steps = torch.empty(self.capacity, dtype=torch.long)
        flat = flat.to(self.device, self.dtype)
        new_ids_dev = new_ids.to(self.device)
        if batch >= self.capacity:  # only the newest `capacity` rows survive
            flat, new_ids_dev = flat[-self.capacity :], new_ids_dev[-self.capacity :]
            new_steps = new_steps[-self.capacity :]
        n = flat.shape[0]
        pos = (self._cursor + torch.arange(n, device=self.device)) % self.capacity
        for snap in list(self._snapshots):
            snap._preserve(pos)
        self._vectors[pos] = flat
        self._ids[pos] = new_ids_dev
        self._steps[pos.cpu()] = new_steps
        self._cursor = (self._cursor + n) % self.capacity
        self._size = min(self.capacity, self._size + n)
        self._next_id = next_id
        self._changed()
        return new_ids

    def clear(self) -> None:
        """Remove all rows (capacity, dtype and device are kept)."""
        self.latent_shape = None
        self._vectors = self._ids = self._steps = None  # snapshots keep the old storage
        self._snapshots = weakref.WeakSet()
        self._size = self._cursor = 0
        self._changed(replaced=True)

    # ------------------------------------------------------------------ distributed
    def gather(self, with_steps: bool = False) -> tuple[Tensor, ...]:
        """Rows and ids (and insertion steps) of the banks of all ranks, in rank order.

        Without an initialised process group this returns this bank's own rows. Banks may hold
        different numbers of rows on different ranks. Collective: every rank must call it.

        Returns:
            ``(vectors (N_total, dim), ids (N_total,))`` on this bank's device, and with
            ``with_steps`` the rows' ``steps (N_total,)`` int64 on the CPU.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            own = (self.vectors.clone(), self.ids.clone())
            return (*own, self.steps.clone()) if with_steps else own
        if self.dim is None:
            raise ValueError("Cannot gather an empty bank: add latents on every rank first.")
        world = torch.distributed.get_world_size()
        comm = comm_device()
        size = torch.tensor([len(self)], device=comm)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        torch.distributed.all_gather(sizes, size)
        max_size = int(max(int(s) for s in sizes))
        # all_gather needs equal shapes: pad, gather, then trim each rank's block.
        vec = torch.zeros(max_size, self.dim, dtype=torch.float32, device=comm)
        idx = torch.zeros(max_size, dtype=torch.long, device=comm)
        vec[: len(self)] = self.vectors.to(comm, torch.float32)
        idx[: len(self)] = self.ids.to(comm)
        vecs = [torch.zeros_like(vec) for _ in range(world)]
        idxs = [torch.zeros_like(idx) for _ in range(world)]
        torch.distributed.all_gather(vecs, vec)
        torch.distributed.all_gather(idxs, idx)
        out_v = torch.cat([v[: int(s)] for v, s in zip(vecs, sizes)]).to(self.device, self.dtype)
        out_i = torch.cat([i[: int(s)] for i, s in zip(idxs, sizes)]).to(self.device)
        if not with_steps:
            return out_v, out_i
        stp = torch.zeros(max_size, dtype=torch.long, device=comm)
        stp[: len(self)] = self.steps.to(comm)
        stps = [torch.zeros_like(stp) for _ in range(world)]
        torch.distributed.all_gather(stps, stp)
        out_s = torch.cat([t[: int(s)] for t, s in zip(stps, sizes)]).cpu()
        return out_v, out_i, out_s

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: rows in insertion order, ids, insertion steps and
        counters (CPU tensors)."""
        order = self._insertion_order()
        return {
            "capacity": self.capacity,
            "dtype": str(self.dtype).replace("torch.", ""),
            "latent_shape": list(self.latent_shape) if self.latent_shape is not None else None,
            "vectors": self.vectors[order].cpu() if len(self) else torch.empty(0),
            "ids": self.ids[order].cpu() if len(self) else torch.empty(0, dtype=torch.long),
            "steps": self.steps[order.cpu()] if len(self) else torch.empty(0, dtype=torch.long),
            "next_id": self._next_id,
            "version": self.version,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the capacity of ``state`` replaces this bank's.
        States saved before rows had steps load with :data:`UNKNOWN_STEP` for every row."""
        missing = {"capacity", "vectors", "ids"} - set(state)
        if missing:
            raise ValueError(f"LatentBank state is missing keys {sorted(missing)}.")
        capacity = int(state["capacity"])
        dtype = _resolve_dtype(state.get("dtype", "float32"))
        vectors, ids = state["vectors"], state["ids"]
        shape = state.get("latent_shape")
        steps = state.get("steps")
        if steps is not None and len(steps) != len(ids):
            raise ValueError(
                f"LatentBank state has {len(steps)} steps for {len(ids)} rows; save it again "
                "with state_dict(), or drop 'steps' to load the rows with unknown steps."
            )
        fresh = LatentBank(capacity, dtype, self.device)
        if len(ids):
            rows = vectors.reshape(len(ids), *(shape or [vectors.shape[1]]))
            fresh.add(rows, ids=ids, step=torch.as_tensor(steps) if steps is not None else None)
        # Above every restored id too: states saved on another world size (or before this rule)
        # may hold a counter below ids that other ranks issued.
        fresh._next_id = max(
            int(state.get("next_id", 0)), int(ids.max()) + 1 if len(ids) else 0, fresh._next_id
        )
        fresh.version = int(state.get("version", 0)) + 1
        # `fresh` brings new token and lineage objects: nothing built from the old rows matches.
        self.__dict__.update(fresh.__dict__)

    def _insertion_order(self) -> Tensor:
        if self._size < self.capacity:
            return torch.arange(self._size, device=self.device)
        return (self._cursor + torch.arange(self.capacity, device=self.device)) % self.capacity

    def __repr__(self) -> str:
        return (
            f"LatentBank(size={len(self)}, capacity={self.capacity}, dim={self.dim}, "
            f"dtype={str(self.dtype).replace('torch.', '')}, device={self.device})"
        )
