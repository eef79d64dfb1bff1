"""The paired difference of two FIDs on the same images: its standard error, alignment, min_delta."""

import math

import pytest
import torch

from bench.bench_paired import Checkpoints, calibrate
from ifid_callback.functional import (
    FIDInfluence,
    frechet_distance,
    frechet_influence,
    frechet_influence_vectors,
    influence_standard_error,
    paired_difference,
    recommend_min_delta,
    statistics_of,
)


def _evaluation(n: int = 120, d: int = 8, seed: int = 0):
    checkpoints = Checkpoints("near", d)
    g = torch.Generator().manual_seed(seed)
    real = checkpoints.real(n, g)
    return real, checkpoints.fakes(real, g)


@pytest.mark.parametrize("d,draws", [(32, 200), (256, 150)], ids=["N>d", "N<d"])
def test_paired_standard_error_is_calibrated_against_repeated_draws(one_thread, d, draws):
    """Two fixed nearby checkpoints score the same N = 200 images, redrawn ``draws`` times.
    Measured (bench/bench_paired.py, 500 draws): mean paired SE / empirical std of FID_a - FID_b
    = 1.045 (d = 32) and 0.993 (d = 256); the independent rule 2.47 and 2.33. Over five seeds
    at these draw counts the paired ratio spread over 0.96-1.10. Tolerance: [0.85, 1.3] for
    the paired SE; the independent rule must be too wide by more than 1.8x (this case is one
    where the pairing matters)."""
    c = calibrate("near", d, 200, draws)
    assert 0.85 <= c.paired_ratio <= 1.3, c
    assert c.independent_ratio > 1.8, c


def test_paired_standard_error_agrees_with_a_brute_force_delete_one_jackknife():
    # Independent reference: delete each image in turn, recompute both FIDs from their
    # statistics (frechet_distance, feature space) and take the jackknife spread of the
    # difference; at N = 150, d = 8 the two estimators of one spread agree within ~10%.
    real, fakes = _evaluation(n=150)
    n = real.shape[0]
    reps = []
    for i in range(n):
        keep = torch.arange(n) != i
        r = statistics_of(real[keep])
        fid = {k: float(frechet_distance(*r, *statistics_of(f[keep]))) for k, f in fakes.items()}
        reps.append(fid["a"] - fid["b"])
    reps = torch.tensor(reps, dtype=torch.float64)
    jackknife = math.sqrt((n - 1) / n * float(((reps - reps.mean()) ** 2).sum()))
    found = frechet_influence_vectors(real, fakes)
    diff = paired_difference(found["a"], found["b"])
    assert float(diff.std_error) == pytest.approx(jackknife, rel=0.1)
    whole = statistics_of(real)
    expected = {k: float(frechet_distance(*whole, *statistics_of(f))) for k, f in fakes.items()}
    assert float(diff.difference) == pytest.approx(expected["a"] - expected["b"], rel=1e-9)


def test_influence_vectors_are_what_the_standard_error_reduces():
    real, fakes = _evaluation()
    vectors = frechet_influence_vectors(real, fakes)
    errors = frechet_influence(real, fakes)
    for name in fakes:
        v = vectors[name]
        assert v.influence.shape == (real.shape[0],) and v.influence.dtype == torch.float64
        assert abs(float(v.influence.sum())) < 1e-9 * float(v.influence.abs().sum())
        assert torch.equal(v.value, errors[name].value)
        hand = math.sqrt(sum(float(x) ** 2 for x in v.influence)) / real.shape[0]
        assert float(errors[name].std_error) == pytest.approx(hand, rel=1e-12)
        assert float(influence_standard_error(v.influence)) == pytest.approx(hand, rel=1e-12)
    # The paired standard error by hand, and a difference with itself has none.
    a, b = vectors["a"], vectors["b"]
    hand = math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a.influence, b.influence)))
    out = paired_difference(a, b)
    assert float(out.std_error) == pytest.approx(hand / real.shape[0], rel=1e-12)
    assert float(out.difference) == pytest.approx(float(a.value) - float(b.value), abs=0)
    assert float(paired_difference(a, a).std_error) == 0.0


def test_positions_align_rows_gathered_in_another_order():
    real, fakes = _evaluation()
    n = real.shape[0]
    positions = torch.arange(1000, 1000 + n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    a = frechet_influence_vectors(real, {"a": fakes["a"]})["a"]
    # b's rows arrive in another order (e.g. gathered from ranks differently).
    b = frechet_influence_vectors(real[perm], {"b": fakes["b"][perm]})["b"]
    aligned = paired_difference(a, b, positions, positions[perm])
    in_order = frechet_influence_vectors(real, fakes)
    reference = paired_difference(in_order["a"], in_order["b"])
    assert float(aligned.std_error) == pytest.approx(float(reference.std_error), rel=1e-9)
    assert float(aligned.difference) == pytest.approx(float(reference.difference), rel=1e-9)
    # Without positions the misaligned rows would give another (wrong) number.
    wrong = paired_difference(a, b)
    assert float(wrong.std_error) > 1.5 * float(reference.std_error)


def test_paired_difference_rejects_mismatched_evaluations():
    real, fakes = _evaluation(n=40)
    found = frechet_influence_vectors(real, fakes)
    a, b = found["a"], found["b"]
    shorter = FIDInfluence(b.value, b.influence[:30])
    with pytest.raises(ValueError, match="40 images but b for 30"):
        paired_difference(a, shorter)
    pos = torch.arange(40)
    with pytest.raises(ValueError, match="both evaluations or for neither"):
        paired_difference(a, b, pos, None)
    other = pos.clone()
    other[3] = 77
    with pytest.raises(ValueError, match=r"different images: 1 positions only in a \(e.g. \[3\]\)"):
        paired_difference(a, b, pos, other)
    repeated = pos.clone()
    repeated[1] = 0
    with pytest.raises(ValueError, match="repeats an image"):
        paired_difference(a, b, repeated, pos)
    with pytest.raises(ValueError, match="integer positions"):
        paired_difference(a, b, pos.double(), pos)
    with pytest.raises(ValueError, match=r"\(40,\) tensor"):
        paired_difference(a, b, pos[:39], pos)
    with pytest.raises(ValueError, match="NaN or Inf"):
        paired_difference(a, FIDInfluence(b.value, b.influence * float("nan")))
    with pytest.raises(ValueError, match="one finite number"):
        paired_difference((float("inf"), a.influence), b)
    with pytest.raises(ValueError, match=r"\(value, influence\) pair"):
        paired_difference(a.influence, b)


def test_recommend_min_delta_paired_rule_drops_the_factor_sqrt2():
    # Paired differences carry the standard error of a difference already: z * median(se).
    diffs = [(-0.4, 0.1), (0.2, 0.3), (-1.0, 0.2)]
    assert recommend_min_delta(diffs, paired=True) == pytest.approx(2 * 0.2)
    assert recommend_min_delta(diffs, z=3.0, paired=True) == pytest.approx(3 * 0.2)
    # The default is still the independent rule.
    assert recommend_min_delta(diffs) == pytest.approx(2 * math.sqrt(2) * 0.2)
    real, fakes = _evaluation()
    found = frechet_influence_vectors(real, fakes)
    out = paired_difference(found["a"], found["b"])
    assert recommend_min_delta([out], paired=True) == pytest.approx(2 * float(out.std_error))
    with pytest.raises(ValueError, match="paired must be"):
        recommend_min_delta(diffs, paired="yes")
