"""AccelerateIFID in a real (tiny, CPU) Accelerate loop: TensorBoard logging and save/load_state."""

import glob
import os

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("tensorboard")

from accelerate import Accelerator  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from ifid_callback.integrations.accelerate import AccelerateIFID  # noqa: E402
from ifid_callback.monitor import IFIDMonitor  # noqa: E402
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig  # noqa: E402
from tests.helpers import RandomFeatures, smooth_images  # noqa: E402

SIZE = 16
IN_DIM = 3 * SIZE * SIZE


def _monitor(vae, **kwargs):
    settings = dict(
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(IN_DIM),
        bank_capacity=48,
        eval_every_n_steps=4,
    )
    settings.update(kwargs)
    return IFIDMonitor(vae, **settings)


def test_loop_logs_to_tensorboard_and_checkpoints_the_monitor(tmp_path):
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(smooth_images(64, 3, SIZE, seed=3)), batch_size=8)
    vae, optimizer, loader = accelerator.prepare(vae, optimizer, loader)
    ifid = AccelerateIFID(_monitor(accelerator.unwrap_model(vae)), accelerator)

    results = []
    for step, (x,) in enumerate(loader, 1):
        out = accelerator.unwrap_model(vae).loss(x)
        optimizer.zero_grad()
        accelerator.backward(out["loss"])
        optimizer.step()
        ifid.observe(latents=out["latents"], step=step)
        if (result := ifid.maybe_evaluate(step)) is not None:
            results.append(result)
    assert [r["step"] for r in results] == [4, 8]
    accelerator.save_state(str(tmp_path / "state"))
    saved = ifid.monitor.state_dict()
    accelerator.end_training()

    files = glob.glob(str(tmp_path / "run" / "**" / "events.out.tfevents.*"), recursive=True)
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("val/ifid")}
    assert logged == pytest.approx({r["step"]: r["ifid"] for r in results}, rel=1e-6)
    assert "val/rfid" in acc.Tags()["scalars"]
    assert "val/ifid_grid" in acc.Tags()["images"]

    # A fresh monitor registered with a fresh Accelerator gets everything back from load_state.
    second = Accelerator(cpu=True)
    fresh = AccelerateIFID(_monitor(accelerator.unwrap_model(vae)), second, log_grid=False)
    second.load_state(str(tmp_path / "state"))
    restored = fresh.monitor.state_dict()
    assert torch.equal(restored["bank"]["vectors"], saved["bank"]["vectors"])
    assert torch.equal(restored["bank"]["ids"], saved["bank"]["ids"])
    for key in ("step", "steps_observed", "last_eval_step", "history"):
        assert restored[key] == saved[key]
    # The restored real statistics are used as they are: the same number as before.
    assert fresh.evaluate(8)["ifid"] == pytest.approx(results[-1]["ifid"], rel=1e-9)


def test_misconfiguration_is_reported():
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    accelerator = Accelerator(cpu=True)
    ifid = AccelerateIFID(_monitor(vae, eval_every_n_steps=None), accelerator, register=False)
    with pytest.raises(ValueError, match="eval_every_n_steps"):
        ifid.maybe_evaluate(4)
    with pytest.raises(ValueError, match="latent bank is empty"):
        ifid.evaluate(4)
    with pytest.raises(ValueError, match="observe\\(\\) got nothing"):
        ifid.observe(step=1)
    with pytest.raises(TypeError, match="IFIDMonitor"):
        AccelerateIFID(object(), accelerator)
