"""gFID's sampling standard error against numpy jackknife references, its tie to iFID's influence
function, the seed summaries, and common random numbers across VAEs in a study (two VAEs with
identical latents give identical gFIDs at every probe seed, and a paired difference of zero)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import linalg

from ifid_callback.functional.uncertainty import frechet_influence_vectors
from ifid_callback.probes.gfid_error import (
    gfid_influence,
    gfid_with_error,
    paired_gfid_difference,
    seed_fields,
    seed_summary,
)
from ifid_callback.probes.study import StudyConfig, run_study
from ifid_callback.probes.zoo import ZooMember, train_zoo

torch.set_num_threads(1)


def _np_fid(a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """Plain numpy/scipy FID of rows ``a`` against fixed statistics (independent of the library)."""
    mu_a, sigma_a = a.mean(0), np.cov(a, rowvar=False)
    covmean = linalg.sqrtm(sigma_a @ sigma_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a + sigma_b - 2 * covmean))


def _jackknife(rows: np.ndarray, stat) -> float:
    """Delete-one jackknife standard error of ``stat(rows)``."""
    n = len(rows)
    reps = np.array([stat(np.delete(rows, i, 0)) for i in range(n)])
    return float(np.sqrt((n - 1) / n * ((reps - reps.mean()) ** 2).sum()))


def _gaussians(n_gen: int, n_ref: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n_ref, d))
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    gen = rng.normal(size=(n_gen, d)) @ mix * 1.2 + 0.25
    return gen, ref


@pytest.mark.parametrize("n_gen,n_ref,d", [(300, 200, 6), (400, 500, 12)])
def test_gfid_se_matches_a_numpy_jackknife(n_gen, n_ref, d):
    gen, ref = _gaussians(n_gen, n_ref, d)
    found = gfid_influence(gen, ref)
    mu_r, sigma_r = ref.mean(0), np.cov(ref, rowvar=False)
    assert float(found.value) == pytest.approx(_np_fid(gen, mu_r, sigma_r), rel=1e-9)
    # Generated samples resampled, the reference held fixed.
    jk = _jackknife(gen, lambda g: _np_fid(g, mu_r, sigma_r))
    assert found.std_error == pytest.approx(jk, rel=0.08)
    # The reference's own term: reference rows resampled, generated statistics held fixed.
    mu_g, sigma_g = gen.mean(0), np.cov(gen, rowvar=False)
    jk_ref = _jackknife(ref, lambda r: _np_fid(r, mu_g, sigma_g))
    assert found.std_error_reference == pytest.approx(jk_ref, rel=0.08)
    assert abs(float(found.generated.sum())) < 1e-9 and abs(float(found.reference.sum())) < 1e-9
    out = gfid_with_error(gen, ref)
    assert out["gfid_se"] == pytest.approx(found.std_error) and out["num_samples"] == n_gen


def test_gfid_influence_is_ifids_influence_split_by_side():
    # With as many generated rows as reference rows, pairing row i of each as one "query",
    # iFID's paired influence (frechet_influence_vectors) is the sum of the two sides'.
    gen, ref = _gaussians(150, 150, 10, seed=3)
    found = gfid_influence(gen, ref)
    paired = frechet_influence_vectors(torch.tensor(ref), {"g": torch.tensor(gen)})["g"]
    assert float(found.value) == pytest.approx(float(paired.value), rel=1e-10)
    torch.testing.assert_close(
        found.generated + found.reference, paired.influence, rtol=0, atol=1e-9
    )


def test_fewer_samples_than_features_stay_finite():
    gen, ref = _gaussians(20, 40, 32, seed=1)
    found = gfid_influence(gen, ref)
    assert np.isfinite(found.std_error) and np.isfinite(found.std_error_reference)
    assert found.std_error > 0
    with pytest.raises(ValueError, match="widths"):
        gfid_influence(gen, ref[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        gfid_influence(np.full((5, 32), np.nan), ref)


def test_paired_difference_of_samples_paired_by_index():
    gen, ref = _gaussians(400, 300, 6, seed=2)
    a = gfid_influence(gen, ref)
    d, se = paired_gfid_difference((a.value, a.generated), (a.value, a.generated))
    assert d == 0.0 and se == 0.0
    # A small shift of the same samples: the shared noise cancels, far below the independent SE.
    b = gfid_influence(gen + 0.05, ref)
    d, se = paired_gfid_difference((b.value, b.generated), (a.value, a.generated))
    assert d == pytest.approx(float(b.value - a.value))
    assert se < 0.3 * np.hypot(a.std_error, b.std_error)
    # Independent sample sets: the paired SE is about the independent one.
    other, _ = _gaussians(400, 300, 6, seed=7)
    c = gfid_influence(other, ref)
    _, se = paired_gfid_difference((c.value, c.generated), (a.value, a.generated))
    assert se == pytest.approx(np.hypot(a.std_error, c.std_error), rel=0.3)


def test_seed_summary():
    s = seed_summary([10.0, 12.0, 14.0], [0.3, 0.4, 0.0])
    assert s["mean"] == 12.0 and s["seed_std"] == pytest.approx(2.0)
    assert s["se"] == pytest.approx(0.5 / 3)
    assert s["sampling_se"] == pytest.approx(np.sqrt(0.25 / 3))
    assert seed_summary([5.0], [0.2])["seed_std"] is None
    fields = seed_fields(
        [
            {
                "gfid": 1.0,
                "gfid_se": 0.1,
                "gfid_se_reference": 0.2,
                "gfid_heldout": 2.0,
                "gfid_heldout_se": 0.3,
            },
            {
                "gfid": 3.0,
                "gfid_se": 0.1,
                "gfid_se_reference": 0.4,
                "gfid_heldout": 2.0,
                "gfid_heldout_se": 0.3,
            },
        ]
    )
    assert fields["gfid_seed_std"] == pytest.approx(np.sqrt(2.0))
    assert fields["gfid_se_seeds"] == [0.1, 0.1]
    assert fields["gfid_se_reference"] == pytest.approx(0.3)


def test_identical_latents_give_identical_gfid_at_every_probe_seed(tmp_path):
    """Common random numbers: the same VAE under two names is two VAEs with identical latents;
    every probe seed gives both the same initialisation, batches, noise and sampling noise."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(48, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    (ckpt,) = train_zoo(
        tmp_path / "zoo",
        images,
        [ZooMember("ae", 4)],
        steps=2,
        batch_size=16,
        base_channels=8,
        progress=False,
    )
    config = StudyConfig(
        vaes=[str(ckpt), str(ckpt)],
        names=["first", "second"],
        out_dir=str(tmp_path / "study"),
        max_train=64,
        num_eval=32,
        num_reference=48,
        num_samples=40,
        t_grid=[0.5],
        feature="tests.test_probe_study:_random_features",
        probe={
            "size": "tiny",
            "steps": 4,
            "batch_size": 16,
            "ema_decay": 0.9,
            "model_overrides": {"depth": 1, "hidden_size": 32, "num_heads": 2},
        },
        probe_seeds=2,
        sampling_steps=2,
        batch_size=32,
        sample_batch_size=16,
    )
    result = run_study(config, progress=False, log=None)
    first, second = result["vaes"]
    assert first["gfid_seeds"] == second["gfid_seeds"]  # bit for bit, each seed
    assert first["gfid_seeds"][0] != first["gfid_seeds"][1]  # seeds differ
    assert first["gfid_se_seeds"] == second["gfid_se_seeds"]
    assert first["gfid_t_seeds"] == second["gfid_t_seeds"]
    for row in (first, second):
        assert all(np.isfinite(v) and v > 0 for v in row["gfid_se_seeds"])
        assert row["gfid_seed_std"] == pytest.approx(np.std(row["gfid_seeds"], ddof=1))
    report = json.loads((tmp_path / "study" / "report" / "results.json").read_text())
    (pair,) = report["analysis"]["gfid_pairs"]
    assert pair["difference_seeds"] == [0.0, 0.0] and pair["se_seeds"] == [0.0, 0.0]
    assert pair["common_noise"] and pair["independent_se"] > 0
    md = (tmp_path / "study" / "report" / "results.md").read_text()
    assert "gFID SE" in md and "gFID seed sd" in md and "paired differences" in md
