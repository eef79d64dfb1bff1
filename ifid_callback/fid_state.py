"""The accumulators of the metric: FID sums and per-image feature rows, and what they give.

FID needs, per set (real images, interpolants, reconstructions), the float64 feature sum, the
float64 outer-product sum and the count: ``dist_reduce_fx="sum"`` states, exact under DDP and
constant in memory. The extras that pair each query's real and decoded features (standard
errors, KID, precision/recall) also need the per-image rows: ``"cat"`` states appended in query
order on each rank, so that row i of every set belongs to the same query after a gather.

These states keep their dtype whatever the metric's: the metric moves them between devices only
(float64 sums, float32 rows, int64 counts and positions). The real-image statistics of the
extras' further feature spaces (:meth:`~ifid_callback.extras.base.Extra.real_states`) live and
survive ``reset()`` with the metric's own (:func:`reset_keeping_real`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ifid_callback.distributed import gather_objects
from ifid_callback.extras.base import PairedRows
from ifid_callback.functional import frechet
from ifid_callback.functional.frechet import frechet_distance, gaussian_statistics

SETS = ("real", "interp", "recon")
REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_num_samples")
# Per-image feature rows (float32) and the real rows' positions.
ROW_STATES = (
    "real_feature_rows",
    "real_row_positions",
    "interp_feature_rows",
    "recon_feature_rows",
)
# The fake sets' sums (what a compute without a bank adds to at the end).
FAKE_SUMS = tuple(
    f"{name}_{part}"
    for name in ("interp", "recon")
    for part in ("features_sum", "features_cov_sum", "num_samples")
)
REAL_ROWS = ("real_feature_rows", "real_row_positions")


def sum_states(d: int) -> dict[str, Tensor]:
    """The FID sums' defaults for features of dimension ``d``."""
    out: dict[str, Tensor] = {}
    for name in SETS:
        out[f"{name}_features_sum"] = torch.zeros(d, dtype=torch.float64)
        out[f"{name}_features_cov_sum"] = torch.zeros(d, d, dtype=torch.float64)
        out[f"{name}_num_samples"] = torch.tensor(0, dtype=torch.long)
    return out


def feature_sums(name: str, f: Tensor) -> dict[str, Tensor]:
    """Increments of the sums of set ``name`` for the (B, d) float64 features ``f``."""
    return {
        f"{name}_features_sum": f.sum(0),
        f"{name}_features_cov_sum": f.T @ f,
        f"{name}_num_samples": torch.tensor(f.shape[0], dtype=torch.long, device=f.device),
    }


def statistics(state: Any, name: str) -> tuple[Tensor, Tensor]:
    """Mean and covariance of set ``name`` from its sums in ``state`` (an object or mapping)."""
    get = state.__getitem__ if isinstance(state, dict) else lambda key: getattr(state, key)
    return gaussian_statistics(
        get(f"{name}_features_sum"), get(f"{name}_features_cov_sum"), get(f"{name}_num_samples")
    )


class RealRoot:
    """The square root of the real covariance, recomputed only when that covariance changed.

    Keyed on the covariance itself (compared exactly), so no path that changes the real
    statistics (updates, a load, a DDP sync) can leave a stale root; iFID and rFID share it.
    """

    def __init__(self) -> None:
        self._cached: tuple[Tensor, Tensor] | None = None

    def __call__(self, sigma: Tensor) -> Tensor:
        sigma = sigma.detach().to("cpu", torch.float64)
        cached = self._cached
        if cached is not None and cached[0].shape == sigma.shape and torch.equal(cached[0], sigma):
            return cached[1]
        root = frechet.psd_sqrt(sigma)
        self._cached = (sigma.clone(), root)
        return root


def fids(state: Any, sums: dict[str, Tensor], root: RealRoot, names: tuple[str, ...]) -> dict:
    """``{"ifid": ..., "rfid": ...}`` for the fake sets ``names`` (of ``"interp"``, ``"recon"``)
    against the real sums in ``state``; ``sums`` holds the fake sets' sums."""
    mu_r, sigma_r = statistics(state, "real")
    sqrt_r = root(sigma_r)
    out = {}
    for name in names:
        mu, sigma = statistics(sums, name)
        out[name[0] + "fid"] = frechet_distance(mu_r, sigma_r, mu, sigma, sqrt_sigma1=sqrt_r)
    return out


def cat_state(state: Any, dtype: torch.dtype, dim: int | None = None) -> Tensor:
    """A ``"cat"`` list state as one tensor (a list before sync, a tensor after)."""
    if isinstance(state, Tensor):
        return state
    if state:
        return torch.cat(state)
    return torch.empty((0,) if dim is None else (0, dim), dtype=dtype)


def paired_rows(
    state: Any, interp_rows: Tensor | None, with_recon: bool, rows_cached: bool
) -> PairedRows:
    """The round's per-image rows from the metric's states, the real rows aligned with the
    fake rows (``interp_rows`` replaces the interpolants' state when given)."""
    positions = cat_state(state.query_positions, torch.long)
    n = positions.shape[0]
    if interp_rows is None:
        interp_rows = cat_state(state.interp_feature_rows, torch.float32)
    fakes = {"ifid": interp_rows}
    if with_recon:
        fakes["rfid"] = cat_state(state.recon_feature_rows, torch.float32)
    for name, rows in fakes.items():
        if rows.shape[0] != n:  # an internal invariant: say so rather than misalign
            raise RuntimeError(
                f"{rows.shape[0]} per-image {name} feature rows for {n} queries; the rows of "
                "one round are out of step (please report this)."
            )
    real = _aligned_real_rows(state, positions, rows_cached).to(torch.float64)
    fakes = {name: rows.to(real.device, torch.float64) for name, rows in fakes.items()}
    return PairedRows(real=real, fakes=fakes, positions=positions)


def _aligned_real_rows(state: Any, positions: Tensor, rows_cached: bool) -> Tensor:
    """The real feature rows in the order of the fake rows (the queries at ``positions``).

    Rows of this round are paired by construction (appended by the same update calls); rows
    cached from an earlier round are paired by the queries' positions.
    """
    real = cat_state(state.real_feature_rows, torch.float32)
    real_positions = cat_state(state.real_row_positions, torch.long).to(positions.device)
    n = positions.shape[0]
    if real_positions.shape == positions.shape and torch.equal(real_positions, positions):
        return real
    if rows_cached and real.shape[0] == n:
        order_real, order_fake = real_positions.argsort(), positions.argsort()
        sorted_real = real_positions[order_real]
        unique = bool((sorted_real[1:] != sorted_real[:-1]).all())
        if unique and torch.equal(sorted_real, positions[order_fake]):
            aligned = torch.empty_like(real)
            aligned[order_fake.to(real.device)] = real[order_real.to(real.device)]
            return aligned
    raise ValueError(
        f"The real-image feature rows ({real.shape[0]}) are not those of this round's {n} "
        "queries (the per-image extras pair each query's real and decoded features by its "
        "position). With reset_real_features=False every round must evaluate the same "
        "images at the same positions; evaluate the same query set, or pass "
        "uncertainty=False, kid=False and precision_recall=False."
    )


def check_real_statistics(stats: dict[str, Any], expected: dict[str, torch.Size], d: int):
    """Validate loaded real statistics: returns ``(sums, rows)`` with rows ``(rows, positions)``
    or None when absent."""
    missing = set(REAL_STATES) - set(stats)
    if missing:
        raise ValueError(
            f"real statistics are missing {sorted(missing)}; pass the dict that "
            f"real_statistics() returns (keys {list(REAL_STATES)})."
        )
    sums = {key: torch.as_tensor(stats[key]) for key in REAL_STATES}
    for key, value in sums.items():
        if value.shape != expected[key]:
            raise ValueError(
                f"{key} has shape {tuple(value.shape)}, expected {tuple(expected[key])}: the "
                "statistics come from a feature network of another dimension; load statistics "
                "computed with this metric's feature network."
            )
    present = [key for key in REAL_ROWS if key in stats]
    if not present:
        return sums, None
    if len(present) != 2:
        raise ValueError(
            "real statistics hold only one of 'real_feature_rows' and 'real_row_positions'; "
            "pass both (real_statistics(per_image=True)) or neither."
        )
    rows = torch.as_tensor(stats["real_feature_rows"])
    positions = torch.as_tensor(stats["real_row_positions"])
    if rows.ndim != 2 or rows.shape[1] != d:
        raise ValueError(
            f"real_feature_rows has shape {tuple(rows.shape)}, expected (n, {d}); load rows "
            "computed with this metric's feature network."
        )
    if positions.shape != (rows.shape[0],) or positions.is_floating_point():
        raise ValueError(
            f"real_row_positions must be ({rows.shape[0]},) integers (one per row), got "
            f"{tuple(positions.shape)} {positions.dtype}."
        )
    if not bool(torch.isfinite(rows).all()):
        raise ValueError("real_feature_rows contains NaN or Inf.")
    return sums, (rows, positions)


def shape_empty_lists(metric: Any, group: Any) -> None:
    """Before a DDP sync: give the empty ``"cat"`` lists of a rank that saw no images the row
    layout of the ranks that hold rows. torchmetrics gathers empty lists as 1-d float32 empties
    against the others' (n, ...) rows of another dtype: a collective mismatch that aborts."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    layouts = {
        attr: (tuple(value[0].shape[1:]), value[0].dtype) if value else None
        for attr in metric._reductions
        if isinstance(value := getattr(metric, attr), list)
    }
    everyone = gather_objects(layouts, group)
    for attr, layout in layouts.items():
        known = next((o[attr] for o in everyone if o[attr] is not None), None)
        if layout is None and known is not None:
            shape, dtype = known
            setattr(metric, attr, [torch.empty((0, *shape), dtype=dtype, device=metric.device)])


def extra_real_names(metric: Any) -> tuple[str, ...]:
    """The names of the extras' real-image statistics (sums of further feature spaces)."""
    return tuple(name for extra in metric.extras.values() for name in extra.real_states())


def reset_keeping_real(metric: Any, reset: Any) -> None:
    """``metric``'s ``reset()``: call ``reset`` (torchmetrics' own), restoring afterwards the
    real statistics (and rows) that ``reset_real_features=False`` keeps: those of a completed
    round, or loaded. An extra's real statistics are kept under the same rule on their own
    (a load without them leaves them to the next round)."""
    keep_real = not metric.reset_real_features and (metric._real_cached or metric._round_computed)
    keep_rows = keep_real and metric._per_image and (metric._rows_cached or metric._round_computed)
    keep_extra = keep_real and (metric._extra_real_cached or metric._round_computed)
    names = REAL_STATES if keep_real else ()
    names += REAL_ROWS if keep_rows else ()
    names += extra_real_names(metric) if keep_extra else ()
    metric._round_computed = False
    # Lists are copied: torchmetrics' reset() clears list states in place.
    kept = {key: list(v) if isinstance(v := getattr(metric, key), list) else v for key in names}
    reset()
    for key, value in kept.items():
        setattr(metric, key, value)
    metric._real_cached, metric._rows_cached = keep_real, keep_rows
    metric._extra_real_cached = keep_extra


def copy_real_statistics(metric: Any, per_image: bool) -> dict[str, Tensor]:
    """Copies of ``metric``'s real-image sums (and, with ``per_image``, its real rows (n, d)
    float32 and their positions (n,) int64), keyed by state name; with further feature spaces,
    their real sums too (``dinov2_real_features_sum``, ...)."""
    out = {key: getattr(metric, key) for key in REAL_STATES + extra_real_names(metric)}
    if per_image:
        out["real_feature_rows"] = cat_state(
            metric.real_feature_rows, torch.float32, metric.num_features
        )
        out["real_row_positions"] = cat_state(metric.real_row_positions, torch.long)
    return {key: value.detach().clone() for key, value in out.items()}


def install_real_statistics(metric: Any, stats: dict[str, Tensor] | None) -> None:
    """Install checked real-image sums (and rows) on ``metric`` and mark them cached; None
    clears them. Nothing changes when ``stats`` is refused."""
    extra = extra_real_names(metric)
    if stats is None:
        metric._real_cached = metric._round_computed = metric._rows_cached = False
        metric._extra_real_cached = False
        for key in REAL_STATES + extra:
            setattr(metric, key, torch.zeros_like(getattr(metric, key)))
        metric.real_feature_rows, metric.real_row_positions = [], []
        return
    expected = {key: getattr(metric, key).shape for key in REAL_STATES}
    sums, rows = check_real_statistics(stats, expected, metric.num_features)
    # The further spaces' sums when all are given (else computed again in the next round).
    extra_sums = {key: torch.as_tensor(stats[key]) for key in extra if key in stats}
    for key, value in extra_sums.items():
        if value.shape != getattr(metric, key).shape:
            raise ValueError(
                f"{key} has shape {tuple(value.shape)}, expected "
                f"{tuple(getattr(metric, key).shape)}: load statistics computed with this "
                "metric's feature networks."
            )
    complete = len(extra_sums) == len(extra)
    for key, value in sums.items():
        setattr(metric, key, value.to(metric.device, getattr(metric, key).dtype))
    for key in extra:
        value = extra_sums[key] if complete else torch.zeros_like(getattr(metric, key))
        setattr(metric, key, value.to(metric.device, getattr(metric, key).dtype))
    metric._extra_real_cached = complete
    metric._real_cached = True
    metric._rows_cached = rows is not None and metric._per_image
    metric.real_feature_rows, metric.real_row_positions = [], []
    if metric._rows_cached:
        metric.real_feature_rows = [rows[0].to(metric.device, torch.float32)]
        metric.real_row_positions = [rows[1].to(metric.device, torch.long)]
