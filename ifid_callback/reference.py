"""The reference of a metric: the rows neighbours come from, their index, and who owns them.

A :class:`Reference` holds one of three sources of rows: a :class:`~ifid_callback.bank.LatentBank`
(indexed at each refresh, gathered over ranks under DDP), vectors given to :meth:`refresh`
(e.g. the queries themselves), or a prebuilt index with a lookup of its rows (a reference too
large for memory). It owns everything the search needs: the index, the rows the index's positions
point into, their ids and insertion steps, the per-channel search statistics
(``search_norm="bn_channel"``) and the per-channel statistics of a spread sample of its rows that
the scale warning compares the queries with (:mod:`ifid_callback.scale_check`).

Ownership is by construction: rows are held by small picklable objects (:class:`OwnedRows`,
:class:`LiveBankRows`, the bank's own :class:`~ifid_callback.bank.BankRows`, :class:`LookupRows`),
never by a closure over another object's storage. A ``deepcopy``, ``pickle`` or ``torch.save``
of whatever holds a reference (the metric, a module around it) copies the reference together with
its bank, so the copy searches and interpolates with its own rows only, and an index built from
the source's bank is never mistaken for one of the copy's: the bank's content identities (its
``token`` and ``lineage`` objects) are copied along with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ifid_callback.bank import UNKNOWN_STEP, LatentBank
from ifid_callback.distributed import all_reduce_int, world_and_rank
from ifid_callback.functional.channel_norm import (
    ChannelStatistics,
    channel_statistics,
    standardize,
)
from ifid_callback.index import NeighborIndex
from ifid_callback.scale_check import ScaleCheck, channels_of

# Rows compared per side when checking that queries and reference are on one scale.
_SCALE_ROWS = 4096


class OwnedRows:
    """Rows this reference holds itself (a frozen copy, gathered rows or given vectors)."""

    def __init__(self, vectors: Tensor) -> None:
        self.vectors = vectors

    def __call__(self, positions: Tensor) -> Tensor:
        return self.vectors[positions.to(self.vectors.device)]


class LiveBankRows:
    """The current rows of a bank, read at each lookup.

    Valid while the bank holds the contents the index was built from; the reference rebuilds
    the index before any search that follows a change (``auto_refresh_index``), so a lookup
    never sees rows the search did not.
    """

    def __init__(self, bank: LatentBank) -> None:
        self.bank = bank

    def __call__(self, positions: Tensor) -> Tensor:
        vectors = self.bank.vectors
        return vectors[positions.to(vectors.device)]


class LookupRows:
    """Rows of a prebuilt index, fetched by id through the user's lookup (``set_reference``)."""

    def __init__(self, index: NeighborIndex, lookup: Callable[[Tensor], Tensor]) -> None:
        self.index = index
        self.lookup = lookup

    def __call__(self, positions: Tensor) -> Tensor:
        return self.lookup(self.index.ids_of(positions))


class Reference:
    """Nearest-neighbour reference of one metric (see the module docstring).

    Args:
        index: the index kind (see :class:`~ifid_callback.index.NeighborIndex`).
        distance: ``"cosine"`` or ``"sqeuclidean"``.
        seed: seed of the index's training (IVF k-means).
        search_norm: ``None`` or ``"bn_channel"``.
        auto_refresh: rebuild the index before any search that follows a change of the bank.
    """

    def __init__(
        self,
        index: str,
        distance: str,
        seed: int,
        search_norm: str | None,
        auto_refresh: bool,
    ) -> None:
        self.index_kind = index
        self.distance = distance
        self.seed = seed
        self.search_norm = search_norm
        self.auto_refresh = auto_refresh
        self._bank: LatentBank | None = None
        self.external = False  # a prebuilt index (set_reference)
        self.drop()

    def drop(self) -> None:
        """Forget the index and everything built with it (the bank stays)."""
        self.index: NeighborIndex | None = None
        self.rows: Callable[[Tensor], Tensor] | None = None
        # (bank, lineage, token, live) of the bank contents the index was built from.
        self.source: tuple[LatentBank, object, object, bool] | None = None
        self.statistics: ChannelStatistics | None = None
        self.scale_check: ScaleCheck | None = None  # queries vs (a spread sample of) the rows
        self.steps: Tensor | None = None  # (N,) insertion steps of the indexed bank rows, CPU

    # ------------------------------------------------------------------ which rows
    @property
    def bank(self) -> LatentBank | None:
        return self._bank

    @bank.setter
    def bank(self, bank: LatentBank | None) -> None:
        if bank is not None and not isinstance(bank, LatentBank):
            raise TypeError(
                f"bank must be a LatentBank or None, got {type(bank).__name__}; put reference "
                "latents in one with bank = LatentBank(capacity=n); bank.add(latents)."
            )
        if bank is not self._bank:
            self.drop()
        self._bank = bank

    @property
    def is_self(self) -> bool:
        """True when the queries are their own reference (no bank, no prebuilt index)."""
        return self._bank is None and not self.external

    def is_stale(self) -> bool:
        """Whether the index must be rebuilt from the bank before the next search."""
        if self.index is None:
            return True
        if self.source is None:  # built from given vectors: kept until the next refresh
            return False
        bank, lineage, token, live = self.source
        if bank is not self._bank or lineage is not bank.lineage:
            return True  # another bank, or this one cleared or restored
        return (live or self.auto_refresh) and token is not bank.token

    def use_prebuilt(self, index: NeighborIndex, lookup: Callable[[Tensor], Tensor]) -> None:
        """Search a prebuilt index and fetch its rows by id with ``lookup``."""
        if not isinstance(index, NeighborIndex) or len(index) == 0:
            raise ValueError("set_reference needs a built, non-empty NeighborIndex.")
        if not callable(lookup):
            raise TypeError("lookup must be callable: ids (B,) -> latents (B, ...).")
        if self._bank is not None:
            raise ValueError("This metric has a bank; set_reference replaces it: pass bank=None.")
        if self.search_norm is not None:
            raise ValueError(
                f"search_norm={self.search_norm!r} needs the reference's per-channel statistics, "
                "which a prebuilt index does not carry; use a bank (or refresh_index(latents)) "
                "or search_norm=None with set_reference()."
            )
        self.drop()
        self.index, self.rows = index, LookupRows(index, lookup)
        self.external = True

    # ------------------------------------------------------------------ building
    def refresh(self, vectors: Tensor | None = None, ids: Tensor | None = None) -> int:
        """(Re)build the index from the bank (gathered over ranks), or from given vectors.

        See :meth:`ifid_callback.metric.InterpolatedFID.refresh_index` for the contract.
        Returns the number of rows indexed.
        """
        world = world_and_rank()[0] if vectors is None else 1
        if vectors is None:
            if self._bank is None:
                raise ValueError("This metric has no bank; pass vectors= to refresh_index().")
            # Under DDP every rank must agree before the gather, or the others would wait forever.
            smallest = all_reduce_int(len(self._bank), "min") if world > 1 else len(self._bank)
            if smallest == 0:
                where = "" if world == 1 else " on at least one rank"
                raise ValueError(
                    f"The latent bank is empty{where}: add reference latents with "
                    "bank.add(latents) before evaluating iFID."
                )
        elif vectors.shape[0] < 1:
            raise ValueError("The reference set is empty; add latents first.")
        channels = self._channels(vectors)
        if vectors is None:
            assert self._bank is not None
            check_channels = channels_of(self._bank.latent_shape)
        else:
            check_channels = channels_of(tuple(vectors.shape[1:]))
        if vectors is not None and vectors.ndim > 2:
            vectors = vectors.reshape(vectors.shape[0], -1)
        self.drop()  # never hold two indexes (or an old snapshot's kept rows) while building
        index = NeighborIndex(index=self.index_kind, distance=self.distance, seed=self.seed)
        source = None
        if vectors is None and world > 1:
            bank = self._bank
            vectors, ids, steps = drop_repeated_rows(*bank.gather(with_steps=True))
            rows: Callable[[Tensor], Tensor] = OwnedRows(vectors)  # this rank's own copy
            source = (bank, bank.lineage, bank.token, False)
        elif vectors is None:
            bank = self._bank
            live = self.auto_refresh  # rebuilt before any search that follows a change
            vectors, ids, steps = bank.vectors, bank.ids.clone(), bank.steps.clone()
            if live:
                rows = LiveBankRows(bank)
            elif index.kind_for(vectors) == "exact":
                vectors = vectors.clone()  # the index searches its own frozen rows
                rows = OwnedRows(vectors)
            else:
                rows = bank.snapshot().rows  # codes in the index, rows read from the bank
            source = (bank, bank.lineage, bank.token, live)
        else:
            if ids is None:
                ids = torch.arange(vectors.shape[0], device=vectors.device)
            rows, steps = OwnedRows(vectors), None
        statistics = None
        if channels is not None:
            # Statistics of exactly the rows indexed (after any gather); the index searches
            # their standardised copy, while `rows` keep returning the raw latents.
            statistics = channel_statistics(vectors, channels)
            vectors = standardize(vectors.to(torch.float32), statistics)
        check = ScaleCheck(rows(spread_positions(vectors.shape[0])), check_channels)
        index.build(vectors, ids)
        self.index, self.source, self.rows = index, source, rows
        self.statistics, self.scale_check, self.steps = statistics, check, steps
        return len(index)

    def _channels(self, vectors: Tensor | None) -> int | None:
        """Channel count of the reference latents when the search standardises them, else None."""
        if self.search_norm is None:
            return None
        if vectors is None:
            assert self._bank is not None
            return int(self._bank.latent_shape[0])
        if vectors.ndim > 2:
            return int(vectors.shape[1])
        raise ValueError(
            f"search_norm={self.search_norm!r} standardises each channel, so refresh_index() "
            f"needs latents shaped (N, C, ...), got flattened rows {tuple(vectors.shape)}; pass "
            "vectors.reshape(N, C, H, W)."
        )

    # ------------------------------------------------------------------ searching
    def search(self, z: Tensor, k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest rows of each latent in ``z`` (B, ...): ``(distances, positions)``,
        both (B, k); the index is rebuilt from the bank first when it is stale."""
        bank = self._bank
        if bank is not None and self.is_stale():
            if len(bank) and bank.latent_shape != tuple(z.shape[1:]):
                raise ValueError(
                    f"The bank holds latents of shape {bank.latent_shape} but the encoder "
                    f"returns {tuple(z.shape[1:])}; fill the bank with this VAE's latents."
                )
            self.refresh()
        if self.index is None:
            raise ValueError("No neighbour index: call refresh_index() first.")
        flat = z.reshape(z.shape[0], -1)
        if flat.shape[1] != self.index.dim:
            raise ValueError(
                f"Latents have {flat.shape[1]} values per sample but the reference has "
                f"{self.index.dim}; use a bank filled by the same encoder."
            )
        available = len(self.index) - (1 if exclude is not None else 0)
        if k > available:
            raise ValueError(
                f"k={k} neighbours requested but the reference holds only {available} "
                "candidates per query; lower k or add more latents to the bank."
            )
        if self.statistics is not None:  # bn_channel: search in the standardised space
            flat = standardize(flat.detach().to(torch.float32), self.statistics)
        # Positions name the rows found; ids are only labels (they may repeat).
        return self.index.search_rows(flat, k=k, exclude=exclude)

    def lookup(self, positions: Tensor) -> Tensor:
        """The rows at ``positions`` of the snapshot the index was built from, (..., D)."""
        assert self.rows is not None
        return self.rows(positions)

    def ids_of(self, positions: Tensor) -> Tensor:
        assert self.index is not None
        return self.index.ids_of(positions)

    def steps_of(self, positions: Tensor) -> Tensor:
        """Insertion steps (int64, CPU, shaped like ``positions``) of the rows at ``positions``
        of the snapshot the index was built from; ``UNKNOWN_STEP`` (-1) for rows not from a
        bank (given vectors, a prebuilt index) or added without a step."""
        positions = positions.cpu()
        if self.steps is None:
            return torch.full(positions.shape, UNKNOWN_STEP, dtype=torch.long)
        return self.steps[positions]

    def warn_if_scale_differs(self, z: Tensor, sample_posterior: bool) -> bool:
        """Accumulate the query latents ``z`` (B, ...) and, once enough were seen, warn when they
        are on another scale than the indexed rows (see :mod:`ifid_callback.scale_check`);
        returns whether it warned (the caller warns once). Cheap per batch: per-channel sums."""
        check = self.scale_check
        found = None if check is None else check.add(z)
        if found is None or not found.differs:
            return False
        wider = found.std_ratio > 1
        if sample_posterior and wider:
            mixed = (
                " The queries are posterior samples (sample_posterior=True): a bank of posterior "
                "means from a VAE with a wide posterior is narrower in the same way; fill both "
                "the same way."
            )
        elif not sample_posterior and not wider:
            mixed = (
                " The queries are posterior means: a bank of posterior samples from a VAE with a "
                "wide posterior is wider in the same way; fill both the same way."
            )
        else:
            mixed = ""
        warnings.warn(
            f"The query latents are on another scale than the reference latents: their "
            f"per-channel standard deviation is {found.std_ratio:.3g}x the reference's and their "
            f"channel means differ by {found.offset:.3g} reference standard deviations (over "
            f"{check.rows} query latents). The bank holds latents transformed from what this "
            "VAE's encode() gives, e.g. multiplied by a diffusion scaling_factor (and shifted by "
            "a shift_factor: SD3, FLUX) or made by other weights. Fill the bank with the raw "
            f"latents (vae.encode(x).latent_dist.mean for a diffusers VAE), as the queries are."
            f"{mixed}",
            UserWarning,
            stacklevel=5,  # the caller of update(), through torchmetrics' wrapper
        )
        return True


def drop_repeated_rows(vectors: Tensor, ids: Tensor, *aligned: Tensor) -> tuple[Tensor, ...]:
    """Keep the first of rows that repeat an earlier row with the same id and the same values.

    Rows that share an id but differ are all kept (ids may repeat); only exact repeats, such as
    one bank present on several ranks, go. ``aligned`` tensors (one value per row, e.g. the
    insertion steps) keep the same rows. Returns the inputs themselves when nothing repeats.
    """
    if len(ids) < 2:
        return vectors, ids, *aligned
    sorted_ids, order = torch.sort(ids, stable=True)  # a group keeps its rows' original order
    counts = torch.unique_consecutive(sorted_ids, return_counts=True)[1]
    if int(counts.max()) < 2:
        return vectors, ids, *aligned
    keep = torch.ones(len(ids), dtype=torch.bool, device=ids.device)
    step = max(1, 2**20 // max(vectors.shape[1], 1))
    for offset in range(1, int(counts.max())):  # compare each row with every earlier one of its id
        pairs = (sorted_ids[offset:] == sorted_ids[:-offset]).nonzero().squeeze(1)
        for start in range(0, len(pairs), step):
            p = pairs[start : start + step]
            later, earlier = order[p + offset], order[p]
            same = (vectors[later] == vectors[earlier]).all(dim=1)
            keep[later[same]] = False
    if bool(keep.all()):
        return vectors, ids, *aligned
    return vectors[keep], ids[keep], *(t[keep.to(t.device)] for t in aligned)


def spread_positions(n: int, most: int = _SCALE_ROWS) -> Tensor:
    """Up to ``most`` positions spread evenly over ``n`` rows."""
    return torch.linspace(0, n - 1, min(n, most)).round().long().unique()
