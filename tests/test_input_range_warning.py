"""Images in [0, 1] given to a metric that expects [-1, 1] pass every range check (they lie inside
it) but are measured shifted and compressed: a round without one value below 0 warns, naming the
fix; a round of proper images does not."""

from __future__ import annotations

import warnings

import pytest
import torch

from ifid_callback import InterpolatedFID
from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import RandomFeatures, smooth_images

MESSAGE = r"No image of this round has a value below 0.*x \* 2 - 1.*input_range=\(0, 1\)"


def _metric(**kwargs) -> InterpolatedFID:
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    return InterpolatedFID(vae=vae, feature=RandomFeatures(3 * 16 * 16), **kwargs)


def _unit(n: int = 8, seed: int = 1) -> torch.Tensor:
    return (smooth_images(n, 3, 16, seed=seed) + 1) / 2  # in [0, 1]


def test_a_round_of_zero_one_images_warns_at_compute():
    metric = _metric()
    metric.update(_unit())
    with pytest.warns(UserWarning, match=MESSAGE):
        metric.compute()


def test_proper_images_and_a_declared_zero_one_range_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric = _metric()
        # 16 images: fewer make the standard errors warn that they are not calibrated yet.
        metric.update(_unit(16) * 2 - 1)
        metric.compute()
        declared = _metric(input_range=(0.0, 1.0))
        declared.update(_unit(16))
        declared.compute()


def test_the_warning_is_per_round_and_a_rejected_batch_counts_for_nothing():
    metric = _metric()
    metric.update(_unit())
    with pytest.warns(UserWarning, match=MESSAGE):
        metric.compute()
    metric.reset()
    metric.update(_unit(16, seed=2) * 2 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.compute()
    # A rejected batch (NaN) in a round of [0, 1] images teaches the metric nothing either way.
    metric.reset()
    bad = _unit(seed=3) * 2 - 1
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric.update(bad)
    metric.update(_unit(seed=4))
    with pytest.warns(UserWarning, match=MESSAGE):
        metric.compute()


def test_the_monitor_passes_the_warning_on():
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    monitor = IFIDMonitor(vae, eval_images=_unit(8), feature=RandomFeatures(3 * 16 * 16))
    with torch.no_grad():
        monitor.observe(latents=vae.encode(_unit(16, seed=5) * 2 - 1).mean)
    with pytest.warns(UserWarning, match=MESSAGE):
        monitor.evaluate(step=1)
