"""Flow-matching training of SiT probes: loss, toy recovery, checkpoints and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ifid_callback.probes.sit import SiT, SiTConfig
from ifid_callback.probes.train import (
    ProbeTrainConfig,
    TrainedProbe,
    ema_decay_at,
    flow_matching_loss,
    train_probe,
)

SMALL = {"depth": 2, "hidden_size": 64, "num_heads": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def _latents(n: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3.0 + 2.0 * torch.randn(n, 4, 4, 4, generator=g)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_one_step_reduces_loss_on_fixed_batch(num_classes):
    torch.manual_seed(0)
    model = SiT(SiTConfig.from_name("tiny", input_size=8, in_channels=4, num_classes=num_classes))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, 8, 8, generator=g)
    t = torch.rand(16, generator=g)
    noise = torch.randn(16, 4, 8, 8, generator=g)
    y = torch.randint(0, num_classes, (16,), generator=g) if num_classes else None
    # The zero-initialised model predicts 0, so the first loss is E|eps - x|^2 ~ 2.
    before = flow_matching_loss(model, x, t, noise, y)
    torch.testing.assert_close(before, (noise - x).square().mean())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    before.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        after = flow_matching_loss(model, x, t, noise, y)
    assert after.item() < before.item()


def test_flow_matching_loss_matches_hand_computation():
    class Constant(torch.nn.Module):
        def forward(self, x_t, t, y=None):
            return torch.full_like(x_t, 0.5)

    x = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    noise = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    # targets eps - x = [-1, 3]; prediction 0.5 -> errors [1.5^2, 2.5^2] -> mean 4.25
    loss = flow_matching_loss(Constant(), x, torch.tensor([0.3, 0.9]), noise)
    assert loss.item() == pytest.approx(4.25)


def test_ema_warmup_schedule():
    assert ema_decay_at(0, 0.9999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.9999) == pytest.approx(0.91)
    assert ema_decay_at(10**7, 0.9999) == 0.9999
    assert ema_decay_at(0, 0.99, warmup=False) == 0.99
    decays = [ema_decay_at(s, 0.999) for s in range(20000)]
    assert all(a <= b for a, b in zip(decays, decays[1:]))


def _gaussian_mixture(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    weights = torch.tensor([0.3, 0.5, 0.2])
    comp = torch.multinomial(weights, n, replacement=True, generator=g)
    return means[comp] + 0.4 * torch.randn(n, 2, generator=g)


def test_gaussian_mixture_toy_ode_and_sde():
    # Each 2-D point is a (2, 1, 1) latent: one token, patch size 1.
    points = _gaussian_mixture(4096, seed=0)
    config = ProbeTrainConfig(
        patch_size=1,
        model_overrides=SMALL,
        steps=400,
        batch_size=256,
        lr=1e-3,
        time_shift=None,
        ema_decay=0.99,
        seed=0,
    )
    probe = train_probe(points.view(-1, 2, 1, 1), None, config, progress=False)
    assert probe.loss_history[-1][1] < probe.loss_history[0][1]
    # Reference moments from a fresh draw of the mixture (not the training set).
    ref = _gaussian_mixture(200_000, seed=1).double().numpy()
    ref_mean, ref_cov = ref.mean(0), np.cov(ref.T)
    for sampler, steps in [("euler", 40), ("heun", 20), ("sde", 80)]:
        g = torch.Generator().manual_seed(2)
        z = (
            probe.sample(3000, sampler=sampler, steps=steps, generator=g)
            .view(-1, 2)
            .double()
            .numpy()
        )
        # Monte-Carlo error at n=3000: ~0.03 on the mean, ~3% on the covariance entries.
        np.testing.assert_allclose(z.mean(0), ref_mean, atol=0.12, err_msg=sampler)
        np.testing.assert_allclose(np.cov(z.T), ref_cov, atol=0.15, rtol=0.05, err_msg=sampler)
        # Mass sits near the modes, not smeared between them.
        assert np.mean(np.abs(z[:, 0] - 1.0) < 0.4) < 0.08, sampler


def _resume_config(**kw) -> ProbeTrainConfig:
    base = {
        "patch_size": 2,
        "model_overrides": SMALL,
        "steps": 6,
        "batch_size": 5,
        "lr": 1e-3,
        "ema_decay": 0.9,
        "checkpoint_every": 2,
        "keep_checkpoints": 10,
        "log_every": 2,
        "seed": 3,
    }
    base.update(kw)
    return ProbeTrainConfig(**base)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_is_bit_exact(tmp_path):
    latents = _latents(n=13)
    labels = torch.arange(13) % 3
    full = train_probe(latents, labels, _resume_config(), tmp_path / "full", progress=False)

    # Half the steps, then a resumed run to the end.
    train_probe(latents, labels, _resume_config(steps=3), tmp_path / "split", progress=False)
    resumed = train_probe(latents, labels, _resume_config(), tmp_path / "split", progress=False)
    _assert_same_state(full.model, resumed.model)
    assert resumed.step == full.step == 6
    assert resumed.loss_history == full.loss_history

    # An interruption after step 2: drop the newer checkpoints of a finished run and resume.
    ckpts = sorted((tmp_path / "full" / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == [f"step_{s:08d}.pt" for s in (2, 4, 6)]
    for p in ckpts[1:]:
        p.unlink()
    again = train_probe(latents, labels, _resume_config(), tmp_path / "full", progress=False)
    _assert_same_state(full.model, again.model)

    # The optimizer state matches too.
    a = torch.load(tmp_path / "full" / "checkpoints" / "step_00000006.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "step_00000006.pt", weights_only=True)
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"])


def test_resume_rejects_changed_recipe_and_finished_runs(tmp_path):
    latents = _latents()
    train_probe(latents, None, _resume_config(steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_probe(latents, None, _resume_config(lr=5e-4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="beyond"):
        train_probe(latents, None, _resume_config(steps=1), tmp_path, progress=False)
    # resume=False starts over.
    fresh = train_probe(
        latents, None, _resume_config(steps=1), tmp_path, resume=False, progress=False
    )
    assert fresh.step == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000001.pt"]
    assert train_probe(latents, None, _resume_config(steps=2), tmp_path, progress=False).step == 2


def test_outputs_save_load_and_seeding(tmp_path):
    latents = _latents()
    cfg = _resume_config(steps=4, checkpoint_every=3, keep_checkpoints=1)
    probe = train_probe(latents, None, cfg, tmp_path, progress=False)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000004.pt"]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert ProbeTrainConfig.from_dict(saved_config["train"]) == cfg
    assert saved_config["model"]["hidden_size"] == 64
    loaded = TrainedProbe.load(tmp_path / "probe.pt")
    _assert_same_state(probe.model, loaded.model)
    assert loaded.config == cfg and loaded.step == 4 and loaded.loss_history == probe.loss_history
    from_ckpt = TrainedProbe.load(tmp_path / "checkpoints" / "step_00000004.pt")
    _assert_same_state(probe.model, from_ckpt.model)
    probe.save(tmp_path / "copy.pt")
    s1 = TrainedProbe.load(tmp_path / "copy.pt").sample(
        3, steps=4, generator=torch.Generator().manual_seed(0)
    )
    s2 = probe.sample(3, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2)
    # Same seed, same weights; another seed, other weights; the global RNG is untouched.
    rng = torch.get_rng_state()
    same = train_probe(latents, None, cfg, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    _assert_same_state(probe.model, same.model)
    other = train_probe(latents, None, _resume_config(steps=4, seed=4), progress=False)
    assert not torch.equal(
        other.model.final_layer.linear.weight, probe.model.final_layer.linear.weight
    )


def test_probe_normaliser_and_denormalised_sampling():
    latents = _latents(n=40)
    probe = train_probe(latents, None, _resume_config(steps=1), progress=False)
    flat = latents.permute(1, 0, 2, 3).reshape(4, -1).double()
    torch.testing.assert_close(probe.normalizer.mean.double(), flat.mean(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        probe.normalizer.std.double(), flat.std(1, unbiased=False), atol=1e-5, rtol=1e-5
    )
    assert probe.time_shift == pytest.approx(0.125)  # sqrt(4*4*4 / 4096)

    # A zero-velocity probe leaves its start point unchanged: sampling returns
    # de-normalised noise, and regenerate returns de-normalised (1 - t) z + t eps.
    zero = TrainedProbe(SiT(probe.model.config), probe.config, 0)
    zero.normalizer.mean.fill_(5.0)
    zero.normalizer.std.fill_(3.0)
    out = zero.sample(6, steps=3, batch_size=4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(6, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, 5.0 + 3.0 * noise)
    clean = _latents(n=5, seed=9)
    regen = zero.regenerate(clean, 0.3, steps=2, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(5, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = 5.0 + 3.0 * (0.7 * (clean - 5.0) / 3.0 + 0.3 * eps)
    torch.testing.assert_close(regen, expected)


def test_conditional_training_and_input_validation():
    latents = _latents(n=12)
    labels = torch.tensor([0, 1, 2, 3] * 3)
    probe = train_probe(latents, labels, _resume_config(steps=2), progress=False)
    assert probe.model.config.num_classes == 4 and probe.model.null_class == 4
    out = probe.sample(4, labels=torch.tensor([0, 1, 2, 3]), cfg_scale=2.0, steps=2)
    assert out.shape == (4, 4, 4, 4) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="labels must lie"):
        train_probe(latents, labels, _resume_config(num_classes=3), progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        train_probe(latents, None, _resume_config(num_classes=3), progress=False)
    with pytest.raises(ValueError, match="latents must be"):
        train_probe(latents[:, :, :, :3], None, _resume_config(), progress=False)
    bad = latents.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        train_probe(bad, None, _resume_config(), progress=False)
    with pytest.raises(ValueError, match="time_shift"):
        ProbeTrainConfig(time_shift="sqrt")
    assert ProbeTrainConfig.from_dict(_resume_config().to_dict()) == _resume_config()


def test_diverging_training_raises_instead_of_returning_nan():
    config = ProbeTrainConfig(
        model_overrides={"depth": 1, "hidden_size": 32, "num_heads": 4},
        steps=3,
        batch_size=4,
        lr=1e30,
        grad_clip=None,
        log_every=1,
    )
    with pytest.raises(FloatingPointError, match="lower lr"):
        train_probe(_latents(n=16), None, config, progress=False)
