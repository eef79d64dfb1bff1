"""Kernel Inception Distance from held features: the unbiased polynomial-kernel MMD, for
independent sets (as torchmetrics computes it) or for sets paired row by row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics.image.kid import maximum_mean_discrepancy, poly_kernel

from ifid_callback.functional.feature_rows import check_feature_rows

# torchmetrics' default subset size; smaller evaluation sets use all their rows per subset.
DEFAULT_SUBSET_SIZE = 1000


class KIDResult(NamedTuple):
    """KID averaged over subsets and its spread over subsets (float64 0-d tensors)."""

    mean: Tensor
    std: Tensor


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def _resolve(
    real: Tensor,
    fake: Tensor,
    subsets: int,
    subset_size: int | None,
    degree: int,
    gamma: float | None,
    coef: float,
    paired: bool,
) -> int:
    """Validate the KID arguments; return the subset size to use."""
    if not isinstance(paired, bool):
        raise ValueError(f"`paired` must be True or False, got {paired!r}.")
    if paired and real.shape[0] != fake.shape[0]:
        raise ValueError(
            f"paired=True needs row i of both sets from the same image, but real has "
            f"{real.shape[0]} rows and fake {fake.shape[0]}; pass paired=False for independent "
            "sets."
        )
    _positive_int("subsets", subsets)
    _positive_int("degree", degree)
    limit = min(real.shape[0], fake.shape[0])
    if subset_size is None:
        subset_size = min(DEFAULT_SUBSET_SIZE, limit)
    _positive_int("subset_size", subset_size)
    if not 2 <= subset_size <= limit:
        raise ValueError(
            f"subset_size={subset_size} must lie in [2, {limit}] (the smaller set has {limit} "
            "rows); lower it or evaluate more images."
        )
    if gamma is not None and not (isinstance(gamma, (int, float)) and gamma > 0):
        raise ValueError(f"`gamma` must be None or a positive number, got {gamma!r}.")
    if not (isinstance(coef, (int, float)) and coef > 0):
        raise ValueError(f"`coef` must be a positive number, got {coef!r}.")
    return subset_size


def _paired_mmd(k_xx: Tensor, k_xy: Tensor, k_yy: Tensor) -> Tensor:
    r"""Unbiased MMD^2 of (m, m) kernel blocks of two sets paired row by row.

    Every term is a U-statistic over pairs of different rows, the cross term included:
    :math:`\frac{1}{m(m-1)} \sum_{i \ne j} [k(x_i, x_j) + k(y_i, y_j) - 2 k(x_i, y_j)]`. The
    matched pairs :math:`k(x_i, y_i)` are left out: x_i and y_i come from the same image, so
    their kernel is not an independent draw and would bias the estimate (low, for a fake set
    close to its real images).
    """
    m = k_xx.shape[0]
    total = k_xx + k_yy - k_xy - k_xy.T
    return (total.sum() - total.diagonal().sum()) / (m * (m - 1))


def _subset_rows(
    n_real: int, n_fake: int, size: int, paired: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One subset's rows of the real and of the fake set (CPU int64).

    Independent sets: one ``randperm`` of each set, real first (torchmetrics' draws). Paired
    sets: one ``randperm`` for both, so each image's real and fake rows stay in the subset
    together.
    """
    rows_real = torch.randperm(n_real, generator=generator, device=generator.device)[:size]
    if paired:
        return rows_real.cpu(), rows_real.cpu()
    rows_fake = torch.randperm(n_fake, generator=generator, device=generator.device)[:size]
    return rows_real.cpu(), rows_fake.cpu()


def kernel_inception_distance(
    real: Tensor,
    fake: Tensor,
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
    paired: bool = False,
) -> KIDResult:
    r"""KID between two feature sets: the unbiased polynomial-kernel MMD^2 over random subsets.

    For each of ``subsets`` subsets, ``subset_size`` rows of ``real`` and of ``fake`` are drawn
    without replacement from ``generator``, and the unbiased MMD^2 estimate with the kernel
    :math:`k(x, y) = (\gamma x^\top y + c)^{p}` is taken.

    ``paired=False`` (default): the sets are independent draws, as real images and generated
    samples are. This is torchmetrics' ``KernelInceptionDistance`` (``poly_mmd``; one
    ``randperm`` of each set per subset, in that order): with the same seed in ``generator`` as
    in torch's global generator, the numbers equal torchmetrics' on the same features (computed
    here in float64).

    ``paired=True``: row i of ``fake`` is made from row i of ``real`` (its reconstruction or
    interpolant), as in rKID and iKID. The independent-set estimator then counts each matched
    pair in its cross term and is biased low, by up to several times KID itself at small N
    (it can go negative). Paired, each subset takes the same rows of both sets and the cross
    term leaves the matched pairs out (a U-statistic over i != j), which is unbiased at any N
    for paired and for independent sets of equal size alike; the sets need equal row counts.

    ``std`` is the spread of the subset estimates (torchmetrics' ``kid_std``), not a standard
    error; it is 0 when ``subset_size`` is N, where every subset holds all rows.

    Args:
        real: (N, d) features of real images, finite.
        fake: (M, d) features of generated images, finite; M = N when ``paired``.
        subsets: number of subsets, >= 1.
        subset_size: rows per subset, 2 <= subset_size <= min(N, M); None takes
            ``min(1000, N, M)`` (torchmetrics' 1000, or all rows of a smaller set).
        degree: kernel degree p, >= 1.
        gamma: kernel scale; None gives 1 / d.
        coef: kernel offset c, > 0.
        generator: random source of the subsets (CPU); None uses a fixed seed of 0.
        paired: whether row i of ``fake`` comes from the same image as row i of ``real``.

    Returns:
        :class:`KIDResult` ``(mean, std)``, float64 0-d tensors on the features' device, in the
        units of squared feature distances (often reported x 1000).
    """
    # Checked here so that errors name the arguments of this function.
    real = check_feature_rows("real", real)
    fake = check_feature_rows("fake", fake, real.shape[1])
    found = kernel_inception_distances(
        real, {"fake": fake}, subsets, subset_size, degree, gamma, coef, generator, paired
    )
    return found["fake"]


def kernel_inception_distances(
    real: Tensor,
    fakes: Mapping[str, Tensor],
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
    paired: bool = False,
) -> dict[str, KIDResult]:
    """KID of each fake set against one real set, every set drawn with the same subsets.

    Each fake set sees the subset draws that :func:`kernel_inception_distance` would make from
    ``generator``'s current state, so KID(real, interpolants) and KID(real, reconstructions)
    compare the same real rows and their difference carries no extra noise from the draws; the
    real-real kernel of each subset is computed once for all fake sets (when they have equal row
    counts). Arguments as in :func:`kernel_inception_distance`; ``fakes`` maps a name (e.g.
    ``"ikid"``, ``"rkid"``) to (M, d) features. Interpolants and reconstructions are paired with
    the real rows: pass ``paired=True`` (every set then needs the real set's N rows).

    Returns:
        name -> :class:`KIDResult`, equal to separate :func:`kernel_inception_distance` calls
        from the same generator state.
    """
    if not isinstance(fakes, Mapping) or not fakes:
        raise ValueError("`fakes` must be a non-empty mapping of name -> (M, d) features.")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if len({f.shape[0] if isinstance(f, Tensor) else None for f in fakes.values()}) > 1:
        # Different sizes draw different permutations: no shared kernel, one call per set.
        start = generator.get_state()
        out = {}
        for name, fake in fakes.items():
            generator.set_state(start)
            out[name] = kernel_inception_distance(
                real, fake, subsets, subset_size, degree, gamma, coef, generator, paired
            )
        return out
    real = check_feature_rows("real", real)
    checked = {
        name: check_feature_rows(f"fakes[{name!r}]", f, real.shape[1]) for name, f in fakes.items()
    }
    first = next(iter(checked.values()))
    # Validates every argument and fixes the subset size, without using the generator.
    subset_size = _resolve(real, first, subsets, subset_size, degree, gamma, coef, paired)
    real64 = real.detach().to(torch.float64)
    fake64 = {name: f.detach().to(torch.float64) for name, f in checked.items()}
    scores = torch.empty(len(fake64), subsets, dtype=torch.float64, device=real.device)
    mmd = _paired_mmd if paired else maximum_mean_discrepancy
    for s in range(subsets):
        rows_real, rows_fake = _subset_rows(
            real.shape[0], first.shape[0], subset_size, paired, generator
        )
        f_real = real64[rows_real.to(real.device)]
        k_11 = poly_kernel(f_real, f_real, degree, gamma, float(coef))
        for j, fake in enumerate(fake64.values()):
            f_fake = fake[rows_fake.to(fake.device)].to(real.device)
            k_22 = poly_kernel(f_fake, f_fake, degree, gamma, float(coef))
            k_12 = poly_kernel(f_real, f_fake, degree, gamma, float(coef))
            scores[j, s] = mmd(k_11, k_12, k_22)
    return {
        name: KIDResult(scores[j].mean(), scores[j].std(unbiased=False))
        for j, name in enumerate(fake64)
    }
