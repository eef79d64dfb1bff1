"""The monitor reports the bank's size and how old the neighbours it used are, in steps."""

import warnings

import pytest
import torch

from ifid_callback.integrations.common import logged_metrics
from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, smooth_images

SIZE = 16
EVAL = smooth_images(24, 3, SIZE, seed=5)


def _monitor(**kwargs):
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    settings = dict(eval_images=EVAL, feature=RandomFeatures(3 * SIZE * SIZE), bank_capacity=32)
    settings.update(kwargs)
    return vae, IFIDMonitor(vae, **settings)


def _observe_eval_images(vae, monitor, steps=(10, 40, 70), **extra):
    # Each evaluation image's own latent enters the bank, so it is that image's neighbour.
    for chunk, step in zip(EVAL.split(8), steps):
        images = {"images": chunk} if extra.get("with_images") else {}
        monitor.observe(latents=vae.encode(chunk).mean.detach(), step=step, **images)


def test_ages_are_the_evaluation_step_minus_the_neighbours_insertion_steps():
    vae, monitor = _monitor()
    _observe_eval_images(vae, monitor)
    result = monitor.evaluate(step=100)
    # Ages 90, 60, 30 for 8 images each: median 60, 90th percentile 90 (linear quantile).
    ages = torch.tensor([90.0] * 8 + [60.0] * 8 + [30.0] * 8, dtype=torch.float64)
    assert result["neighbor_age_median"] == float(torch.quantile(ages, 0.5)) == 60.0
    assert result["neighbor_age_p90"] == float(torch.quantile(ages, 0.9)) == 90.0
    assert result["bank_size"] == 24
    logged = logged_metrics(result)
    assert logged["val/bank_size"] == 24.0 and logged["val/neighbor_age_median"] == 60.0
    assert "val/step" not in logged and "val/num_eval_images" not in logged


def test_an_exact_bank_is_re_encoded_at_the_evaluation_so_its_neighbours_are_new():
    vae, monitor = _monitor(exact_bank=True)
    _observe_eval_images(vae, monitor, with_images=True)
    result = monitor.evaluate(step=100)
    assert result["neighbor_age_median"] == result["neighbor_age_p90"] == 0.0


def test_old_neighbours_warn_once_and_young_ones_never():
    vae, monitor = _monitor(max_neighbor_age=50)
    _observe_eval_images(vae, monitor)
    with pytest.warns(UserWarning, match=r"median age 60 steps .* max_neighbor_age=50"):
        monitor.evaluate(step=100)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*max_neighbor_age.*")
        monitor.evaluate(step=101)  # warned once already
        vae, young = _monitor(max_neighbor_age=60)
        _observe_eval_images(vae, young)
        young.evaluate(step=100)  # median 60 is not over 60


def test_ages_survive_a_checkpoint_round_trip():
    vae, monitor = _monitor()
    _observe_eval_images(vae, monitor)
    state = monitor.state_dict()
    _, restored = _monitor()
    restored.load_state_dict(state)
    assert restored.evaluate(step=100)["neighbor_age_median"] == 60.0


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_a_bad_max_neighbor_age_is_refused(bad):
    with pytest.raises(ValueError, match="max_neighbor_age"):
        _monitor(max_neighbor_age=bad)
