"""The paper preset picks like the official code, never overrides an argument silently, and
every report records the settings that ran."""

import json

import numpy as np
import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank, cli
from ifid_callback.metric import resolve_settings
from tests.helpers import RandomFeatures
from tests.test_cli import SMOKE, eval_args, setup  # noqa: F401  (module fixture)

LATENT = (4, 8, 8)  # SD-VAE-like latents of a 64x64 image, at SD-VAE scale (std ~5)
D = int(np.prod(LATENT))


def identity_metric(**kwargs):
    """A metric whose 'VAE' is the identity on latents, so neighbors() sees the raw latents."""
    return InterpolatedFID(
        encoder=lambda x: x,
        decoder=lambda z: z,
        feature=RandomFeatures(D),
        **kwargs,
    )


def realistic_bank(seed=0):
    """A query and a bank whose 10 nearest rows (by cosine) lie at per-element MSEs of ~0.2-3."""
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(D) * 5.0
    near = [query + rng.standard_normal(D) * s for s in np.linspace(0.45, 1.75, 10)]
    far = [rng.standard_normal(D) * 5.0 for _ in range(190)]
    rows = np.stack(near + far)
    return query, rows


def official_probabilities(query, rows, k=10):
    """The official rule written out: top-k by cosine, then softmax(-mean squared error)."""
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    cosine = 1 - unit @ (query / np.linalg.norm(query))
    top = np.argsort(cosine)[:k]
    mse = ((rows[top] - query) ** 2).mean(axis=1)
    weights = np.exp(-(mse - mse.min()))
    return top, weights / weights.sum(), cosine[top]


@pytest.mark.parametrize("how", ["preset", "explicit"])
def test_paper_pick_matches_the_official_softmax_of_minus_mse(how):
    query, rows = realistic_bank()
    top, expected, cosine = official_probabilities(query, rows)
    bank = LatentBank(capacity=len(rows))
    bank.add(torch.from_numpy(rows).float().reshape(-1, *LATENT))
    kwargs = {"preset": "paper"} if how == "preset" else {"k": 10, "pick": "softmax_mse"}
    metric = identity_metric(bank=bank, **kwargs)
    draws = 6000
    z = torch.from_numpy(query).float().reshape(1, *LATENT).expand(draws, *LATENT)
    _, chosen = metric.neighbors(z)
    counts = np.bincount(chosen.numpy(), minlength=len(rows))
    assert counts[np.setdiff1d(np.arange(len(rows)), top)].sum() == 0
    freq = counts[top] / draws
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(freq - expected) <= 4.5 * sigma + 1e-3), (freq, expected)
    # The scale matters: the nearest is picked far more often than the old softmax over cosine
    # distances (nearly uniform) would pick it.
    old_rule = np.exp(-cosine) / np.exp(-cosine).sum()
    assert expected[0] > 0.2 > 0.11 > old_rule[0]
    assert np.any(np.abs(old_rule - expected) > 4.5 * sigma + 1e-3)  # the check tells them apart


def test_softmax_distance_is_the_softmax_of_the_search_distance():
    query, rows = realistic_bank(1)
    top, _, cosine = official_probabilities(query, rows)
    bank = LatentBank(capacity=len(rows))
    bank.add(torch.from_numpy(rows).float().reshape(-1, *LATENT))
    metric = identity_metric(bank=bank, k=10, pick="softmax_distance")
    draws = 4000
    z = torch.from_numpy(query).float().reshape(1, *LATENT).expand(draws, *LATENT)
    _, chosen = metric.neighbors(z)
    freq = np.bincount(chosen.numpy(), minlength=len(rows))[top] / draws
    expected = np.exp(-cosine) / np.exp(-cosine).sum()
    assert np.all(np.abs(freq - expected) <= 4.5 * np.sqrt(expected / draws) + 1e-3)


def test_bare_softmax_is_refused_as_ambiguous():
    with pytest.raises(ValueError, match=r"ambiguous.*'softmax_mse'.*'softmax_distance'"):
        identity_metric(k=5, pick="softmax")


# ------------------------------------------------------------------ conflicts and reports
def test_a_preset_never_overrides_explicit_arguments():
    with pytest.raises(ValueError, match=r"preset='paper' sets .*k=10.* but got .*k=3") as info:
        identity_metric(preset="paper", interpolation="linear", alpha=0.25, k=3)
    message = str(info.value)
    for part in ("interpolation='linear'", "alpha=0.25", "drop those arguments"):
        assert part in message
    with pytest.raises(ValueError, match="sample_posterior=False"):
        identity_metric(preset="paper", sample_posterior=False)
    # Arguments that agree with the preset are fine.
    metric = identity_metric(preset="paper", k=10, alpha=0.5, interpolation="slerp")
    assert metric.k == 10


def test_settings_record_what_runs():
    paper = identity_metric(preset="paper", seed=3)
    expected = {
        "preset": "paper",
        "interpolation": "slerp",
        "alpha": 0.5,
        "k": 10,
        "pick": "softmax_mse",
        "sample_posterior": True,
        "search_norm": None,
        "distance": "cosine",
    }
    assert {key: paper.settings[key] for key in expected} == expected
    assert paper.settings["seed"] == 3 and paper.settings["feature"] == "RandomFeatures"
    assert (paper.k, paper.pick, paper.vae.sample_posterior) == (10, "softmax_mse", True)
    plain = identity_metric(interpolation="linear")
    assert plain.settings["distance"] == "sqeuclidean" and plain.settings["k"] == 1
    # The preset asks for the authors' preprocessing; a custom feature module does its own.
    assert resolve_settings("paper") == {**expected, "preprocessing": "official"}
    assert paper.settings["preprocessing"] is None
    json.dumps(paper.settings)  # a report can write them as they are


def test_ifid_eval_json_records_the_preset_settings(setup, tmp_path):  # noqa: F811
    out = tmp_path / "paper.json"
    code = cli.main(
        [*eval_args(setup), "--feature", SMOKE, "--preset", "paper", "--json", str(out)]
        + ["--no-progress", "--device", "cpu"]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["k"] == 10 and result["pick"] == "softmax_mse"
    assert result["sample_posterior"] is True and result["preset"] == "paper"
    assert (result["interpolation"], result["alpha"], result["distance"]) == (
        "slerp",
        0.5,
        "cosine",
    )


def test_ifid_eval_refuses_a_preset_with_contradicting_options(setup, capsys):  # noqa: F811
    code = cli.main([*eval_args(setup), "--feature", SMOKE, "--preset", "paper", "--k", "3"])
    assert code == 2
    assert "preset='paper' sets k=10 but got k=3" in capsys.readouterr().err


def test_ifid_eval_records_the_preprocessing_that_runs(setup, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "paper.json"
    args = [*eval_args(setup), "--feature", SMOKE, "--no-progress", "--device", "cpu"]
    assert cli.main([*args, "--preset", "paper", "--json", str(out)]) == 0
    # A custom feature module does its own preprocessing: recorded as such, not as 'official'.
    assert json.loads(out.read_text())["preprocessing"] is None
    # Asking a custom module for the authors' preprocessing is refused, not ignored.
    code = cli.main([*args, "--preprocessing", "official"])
    assert code == 2
    assert "does its own preprocessing" in capsys.readouterr().err
