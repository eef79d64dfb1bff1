"""The natural family's primary test and its power, before the run.

:func:`ragged_paired_difference` is the pre-registered primary test: a paired bootstrap of
``corr(iFID, gFID) - corr(rFID, gFID)`` over VAEs, each resample redrawing the VAEs with
replacement and, within each drawn VAE, its own probe seeds with replacement (VAEs may have
different numbers of probe seeds: one for most, two for a random third). :func:`simulate_power`
runs that test on simulated families whose noise is the measured one, and
:func:`measured_noise` reads that noise off a committed study's ``results.json``.

The secondary analyses resample the same way (VAEs, then each VAE's own probe seeds):
:func:`ragged_correlation` (one predictor against gFID), :func:`ragged_partial_correlation`
(does a predictor add to another?), :func:`stratified_paired_difference` (the primary's
difference after adjusting for a stratum such as the latent shape) and :func:`seed_spread`
(probe-seed noise against the spread across VAEs).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .stats import CorrelationResult, PairedDifference, correlation

__all__ = [
    "MeasuredNoise",
    "measured_noise",
    "ragged_correlation",
    "ragged_paired_difference",
    "ragged_partial_correlation",
    "seed_counts_for",
    "seed_spread",
    "simulate_power",
    "stratified_paired_difference",
]


def _ranks(m: np.ndarray) -> np.ndarray:
    import scipy.stats

    return scipy.stats.rankdata(m, axis=-1)


def _rowwise_corr(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xc = xs - xs.mean(axis=-1, keepdims=True)
    yc = ys - ys.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))


def _padded(y_seeds: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(n, max seeds)`` values padded with NaN, and the seed count of each row."""
    counts = np.array([len(v) for v in y_seeds], dtype=np.int64)
    if counts.size == 0 or counts.min() < 1:
        raise ValueError(
            f"every VAE needs at least one probe seed's gFID, got counts {counts.tolist()}"
        )
    padded = np.full((counts.size, int(counts.max())), np.nan)
    for i, values in enumerate(y_seeds):
        padded[i, : len(values)] = np.asarray(values, dtype=np.float64)
    if not np.isfinite(padded[np.arange(padded.shape[1]) < counts[:, None]]).all():
        raise ValueError("per-seed gFIDs must be finite; drop or rerun the VAE whose probe failed")
    return padded, counts


def _resampled_means(
    padded: np.ndarray, counts: np.ndarray, idx: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(R, n) seed means of the drawn VAEs ``idx`` (R, n), their seeds redrawn with replacement."""
    c = counts[idx]
    slots = padded.shape[1]
    pick = np.floor(rng.random((*idx.shape, slots)) * c[..., None]).astype(np.int64)
    values = padded[idx[..., None], pick]
    used = np.arange(slots) < c[..., None]
    return np.where(used, values, 0.0).sum(-1) / c


def ragged_paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    y_seeds: Sequence[Sequence[float]],
    method: str = "spearman",
    *,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of ``corr(a, y) - corr(b, y)``, ``y`` each VAE's mean over its seeds.

    Args:
        a, b: (n,) the two predictors (e.g. iFID and rFID), one value per VAE.
        y_seeds: n lists of per-probe-seed targets (gFID), each of length >= 1.
        method: ``"spearman"`` (the primary) or ``"pearson"``.
        num_resamples, confidence, seed: bootstrap settings (percentile interval).
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    padded, counts = _padded(y_seeds)
    if not xa.shape == xb.shape == counts.shape or xa.size < 3:
        raise ValueError(
            f"a, b and y_seeds need one entry per VAE (at least 3), got {xa.size}, {xb.size} and "
            f"{counts.size}"
        )
    y = np.nanmean(padded, axis=1)
    ca, cb = correlation(xa, y, method), correlation(xb, y, method)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xa.size, size=(num_resamples, xa.size))
    ys, as_, bs = _resampled_means(padded, counts, idx, rng), xa[idx], xb[idx]
    if method == "spearman":
        as_, bs, ys = _ranks(as_), _ranks(bs), _ranks(ys)
    d = _rowwise_corr(as_, ys) - _rowwise_corr(bs, ys)
    d = d[np.isfinite(d)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(d, [tail, 1.0 - tail]) if d.size else (math.nan, math.nan)
    return PairedDifference(
        method,
        ca,
        cb,
        ca - cb,
        float(low),
        float(high),
        float((d > 0).mean()) if d.size else math.nan,
        int(xa.size),
        int(d.size),
        True,
    )


def seed_counts_for(n: int, second_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) probe seeds per VAE: 2 for a random ``round(second_fraction * n)`` of them, else 1."""
    counts = np.ones(n, dtype=np.int64)
    counts[rng.permutation(n)[: int(round(second_fraction * n))]] = 2
    return counts


def _pearson_of_spearman(rho: float) -> float:
    """The Pearson correlation of a bivariate normal whose Spearman correlation is ``rho``."""
    return 2.0 * math.sin(math.pi * rho / 6.0)


def _simulated_family(
    n: int,
    rho_a: float,
    rho_b: float,
    rho_ab: float,
    sigma_between: float,
    sigma_seed: float,
    counts: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    r = [_pearson_of_spearman(v) for v in (rho_a, rho_b, rho_ab)]
    cov = np.array([[1.0, r[2], r[0]], [r[2], 1.0, r[1]], [r[0], r[1], 1.0]])
    if np.linalg.eigvalsh(cov).min() <= 0:
        raise ValueError(
            f"Spearman correlations a-y {rho_a}, b-y {rho_b}, a-b {rho_ab} are not jointly "
            "possible; lower |rho_ab| or move rho_a and rho_b closer together."
        )
    draws = rng.multivariate_normal(np.zeros(3), cov, size=n)
    true_gfid = sigma_between * draws[:, 2]
    seeds = [true_gfid[i] + sigma_seed * rng.standard_normal(int(c)) for i, c in enumerate(counts)]
    return draws[:, 0], draws[:, 1], seeds


def simulate_power(
    n: int,
    *,
    rho_a: float,
    rho_b: float,
    rho_ab: float,
    sigma_between: float,
    sigma_seed: float,
    second_seed_fraction: float = 1.0 / 3.0,
    simulations: int = 400,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Power of :func:`ragged_paired_difference` (Spearman) to find ``rho_a > rho_b``.

    Each simulated family has ``n`` VAEs: predictors ``a``, ``b`` and the VAEs' true (noise-free,
    mean over infinitely many probe seeds) gFIDs are jointly normal with Spearman correlations
    ``rho_a`` (a with gFID), ``rho_b`` (b with gFID) and ``rho_ab``; true gFIDs have std
    ``sigma_between`` (FID units); each probe seed adds independent noise of std ``sigma_seed``;
    a random ``second_seed_fraction`` of the VAEs get two seeds. A family counts as a detection
    when the lower end of the ``confidence`` interval is above 0.

    Returns:
        ``{"power", "mean_difference", "simulations"}``: the detection rate, and the mean
        observed Spearman difference (below ``rho_a - rho_b`` by the attenuation of noisy gFIDs).
    """
    rng = np.random.default_rng(seed)
    hits, diffs = 0, []
    for _ in range(simulations):
        counts = seed_counts_for(n, second_seed_fraction, rng)
        a, b, seeds = _simulated_family(
            n, rho_a, rho_b, rho_ab, sigma_between, sigma_seed, counts, rng
        )
        result = ragged_paired_difference(
            a,
            b,
            seeds,
            "spearman",
            num_resamples=num_resamples,
            confidence=confidence,
            seed=int(rng.integers(2**31)),
        )
        hits += bool(result.low > 0)
        diffs.append(result.difference)
    return {
        "power": hits / simulations,
        "mean_difference": float(np.nanmean(diffs)),
        "simulations": simulations,
    }


@dataclass(frozen=True)
class MeasuredNoise:
    """Noise measured on a committed study's group of VAEs (FID units unless noted).

    Attributes:
        group, n: the group and its number of VAEs.
        sigma_seed: std of one probe seed's gFID around its VAE's mean (pooled within VAEs).
        sigma_between_observed: std across VAEs of the per-VAE mean gFID.
        sigma_between: the same without the seed noise in the means (the true spread).
        seeds_per_vae: probe seeds per VAE in that study.
        num_samples: generated samples per gFID in that study.
        rho_ifid_rfid: Spearman correlation of iFID and rFID across the group's VAEs.
    """

    group: str
    n: int
    sigma_seed: float
    sigma_between_observed: float
    sigma_between: float
    seeds_per_vae: int
    num_samples: int
    rho_ifid_rfid: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measured_noise(results_json: str | os.PathLike, group: str = "A") -> MeasuredNoise:
    """The gFID noise of ``group`` in a study's ``results.json`` (rows with >= 2 probe seeds)."""
    data = json.loads(open(results_json).read())
    groups = data["config"]["groups"]
    if group not in groups:
        raise ValueError(f"no group {group!r} in {results_json}; groups: {sorted(groups)}")
    rows = {r["name"]: r for r in data["vaes"]}
    members = [rows[name] for name in groups[group]]
    seeds = np.array([r["gfid_seeds"] for r in members], dtype=np.float64)
    if seeds.ndim != 2 or seeds.shape[1] < 2:
        raise ValueError(f"group {group!r} needs >= 2 probe seeds per VAE, got {seeds.shape}")
    sigma_seed = float(np.sqrt(np.var(seeds, axis=1, ddof=1).mean()))
    observed = float(seeds.mean(axis=1).std(ddof=1))
    true_var = observed**2 - sigma_seed**2 / seeds.shape[1]
    ifid = [r["ifid"] for r in members]
    rfid = [r["rfid"] for r in members]
    return MeasuredNoise(
        group=group,
        n=len(members),
        sigma_seed=sigma_seed,
        sigma_between_observed=observed,
        sigma_between=float(math.sqrt(max(true_var, 0.0))),
        seeds_per_vae=int(seeds.shape[1]),
        num_samples=int(data["config"]["num_samples"]),
        rho_ifid_rfid=correlation(ifid, rfid, "spearman"),
    )


# --- secondary analyses: the same two-level resampling as the primary test -------------------


def _check_bootstrap(method: str, num_resamples: int, confidence: float) -> None:
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive int, got {num_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _predictors(xs: Sequence[Sequence[float]], n: int) -> list[np.ndarray]:
    out = [np.asarray(x, dtype=np.float64) for x in xs]
    for x in out:
        if x.shape != (n,):
            raise ValueError(
                f"every predictor needs one value per VAE ({n}, as y_seeds), got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("predictors must be finite; leave out the VAE whose value is missing")
    if n < 3:
        raise ValueError(f"a correlation over VAEs needs at least 3 of them, got {n}")
    return out


def _percentile(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _partial(r_xy: np.ndarray, r_xz: np.ndarray, r_yz: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r_xy - r_xz * r_yz) / np.sqrt((1 - r_xz**2) * (1 - r_yz**2))


def ragged_correlation(
    x: Sequence[float],
    y_seeds: Sequence[Sequence[float]],
    method: str = "spearman",
    *,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationResult:
    """``corr(x, y)``, ``y`` each VAE's mean over its probe seeds, with a percentile interval
    over resamples of the VAEs and, within each drawn VAE, of its own seeds (as the primary).

    Returns a :class:`~ifid_callback.probes.stats.CorrelationResult` (``p_value`` from
    ``scipy.stats`` on the seed means, ignoring the seed noise).
    """
    import scipy.stats

    _check_bootstrap(method, num_resamples, confidence)
    padded, counts = _padded(y_seeds)
    (xa,) = _predictors([x], counts.size)
    y = np.nanmean(padded, axis=1)
    value = correlation(xa, y, method)
    p_value = math.nan
    if math.isfinite(value):
        test = scipy.stats.pearsonr if method == "pearson" else scipy.stats.spearmanr
        p_value = float(test(xa, y)[1])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xa.size, size=(num_resamples, xa.size))
    ys, xs = _resampled_means(padded, counts, idx, rng), xa[idx]
    if method == "spearman":
        xs, ys = _ranks(xs), _ranks(ys)
    r = _rowwise_corr(xs, ys)
    low, high = _percentile(r, confidence)
    return CorrelationResult(
        method, value, low, high, int(xa.size), int(np.isfinite(r).sum()), p_value
    )


def ragged_partial_correlation(
    x: Sequence[float],
    z: Sequence[float],
    y_seeds: Sequence[Sequence[float]],
    method: str = "spearman",
    *,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationResult:
    """Partial correlation of ``x`` and ``y`` given ``z`` (does ``x`` tell about gFID what ``z``
    does not?), ``y`` each VAE's mean over its probe seeds::

        (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2) (1 - r_yz^2))

    from Pearson correlations of the values (``"pearson"``) or of their ranks (``"spearman"``:
    the rank partial correlation). Interval: VAEs and their seeds resampled, as the primary.
    ``p_value``: the t-test with ``n - 3`` degrees of freedom on the seed means.
    """
    import scipy.stats

    _check_bootstrap(method, num_resamples, confidence)
    padded, counts = _padded(y_seeds)
    xa, za = _predictors([x, z], counts.size)
    y = np.nanmean(padded, axis=1)[None, :]
    xo, zo = xa[None, :], za[None, :]
    if method == "spearman":
        xo, zo, y = _ranks(xo), _ranks(zo), _ranks(y)
    value = float(_partial(_rowwise_corr(xo, y), _rowwise_corr(xo, zo), _rowwise_corr(y, zo))[0])
    n = xa.size
    p_value = math.nan
    if math.isfinite(value) and n > 3 and abs(value) < 1:
        t = value * math.sqrt((n - 3) / (1 - value**2))
        p_value = float(2 * scipy.stats.t.sf(abs(t), n - 3))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(num_resamples, n))
    ys, xs, zs = _resampled_means(padded, counts, idx, rng), xa[idx], za[idx]
    if method == "spearman":
        xs, zs, ys = _ranks(xs), _ranks(zs), _ranks(ys)
    r = _partial(_rowwise_corr(xs, ys), _rowwise_corr(xs, zs), _rowwise_corr(ys, zs))
    low, high = _percentile(r, confidence)
    return CorrelationResult(
        f"partial-{method}", value, low, high, int(n), int(np.isfinite(r).sum()), p_value
    )


def _stratified_ranks(values: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """Ranks within each block of columns, centred and divided by the block's size (so that
    blocks of different sizes pool on one scale; for equal sizes a common affine map)."""
    out = np.empty_like(values)
    for cols in blocks:
        size = cols.size
        out[..., cols] = (_ranks(values[..., cols]) - (size + 1) / 2.0) / size
    return out


def stratified_paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    y_seeds: Sequence[Sequence[float]],
    strata: Sequence[str],
    *,
    num_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """``corr(a, y) - corr(b, y)`` after adjusting for a stratum (the latent shape): ``a``,
    ``b`` and ``y`` (each VAE's seed mean) are ranked within their stratum, the within-stratum
    ranks pooled (centred per stratum, divided by its size) and correlated (Pearson of the
    pooled ranks: a stratified Spearman). Each resample draws the VAEs with replacement within
    their own stratum (stratum sizes fixed), then each drawn VAE's seeds. Every stratum needs at
    least 2 VAEs. Returned with ``method="stratified-spearman"``.
    """
    _check_bootstrap("spearman", num_resamples, confidence)
    padded, counts = _padded(y_seeds)
    xa, xb = _predictors([a, b], counts.size)
    labels = np.asarray(list(strata), dtype=object)
    if labels.shape != (counts.size,):
        raise ValueError(f"strata needs one label per VAE ({counts.size}), got {labels.size}")
    blocks = [np.flatnonzero(labels == s) for s in dict.fromkeys(labels.tolist())]
    if min(len(cols) for cols in blocks) < 2:
        raise ValueError("every stratum needs at least 2 VAEs to rank within it")
    y = np.nanmean(padded, axis=1)

    def diff(av: np.ndarray, bv: np.ndarray, yv: np.ndarray) -> np.ndarray:
        ar, br, yr = (_stratified_ranks(v, blocks) for v in (av, bv, yv))
        return _rowwise_corr(ar, yr) - _rowwise_corr(br, yr)

    ca = float(_rowwise_corr(_stratified_ranks(xa, blocks), _stratified_ranks(y, blocks)))
    cb = float(_rowwise_corr(_stratified_ranks(xb, blocks), _stratified_ranks(y, blocks)))
    rng = np.random.default_rng(seed)
    idx = np.empty((num_resamples, counts.size), dtype=np.int64)
    for cols in blocks:
        idx[:, cols] = cols[rng.integers(0, cols.size, size=(num_resamples, cols.size))]
    d = diff(xa[idx], xb[idx], _resampled_means(padded, counts, idx, rng))
    low, high = _percentile(d, confidence)
    finite = d[np.isfinite(d)]
    return PairedDifference(
        "stratified-spearman",
        ca,
        cb,
        ca - cb,
        low,
        high,
        float((finite > 0).mean()) if finite.size else math.nan,
        int(counts.size),
        int(finite.size),
        True,
    )


def seed_spread(y_seeds: Sequence[Sequence[float]]) -> dict[str, float | int]:
    """Probe-seed noise of gFID against its spread across VAEs.

    Returns ``{"seed_std"}``: the pooled within-VAE standard deviation (square root of the mean
    of the ddof-1 variances of the VAEs with at least 2 seeds; NaN when none has 2),
    ``"vae_std"``: the ddof-1 standard deviation across VAEs of their seed means, ``"ratio"``:
    ``seed_std / vae_std``, ``"vaes_with_seeds"``: how many VAEs the seed noise comes from,
    ``"n"``: VAEs.
    """
    padded, counts = _padded(y_seeds)
    multi = counts >= 2
    seed_std = math.nan
    if multi.any():
        seed_std = float(np.sqrt(np.nanvar(padded[multi], axis=1, ddof=1).mean()))
    means = np.nanmean(padded, axis=1)
    vae_std = float(means.std(ddof=1)) if means.size > 1 else math.nan
    ratio = seed_std / vae_std if vae_std > 0 else math.nan
    return {
        "seed_std": seed_std,
        "vae_std": vae_std,
        "ratio": ratio,
        "vaes_with_seeds": int(multi.sum()),
        "n": int(counts.size),
    }
