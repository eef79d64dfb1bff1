"""IFIDCallback in real (tiny, CPU) Lightning runs: logging, checkpoint selection, resume, DDP."""

import glob
import os

import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("tensorboard")

from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from ifid_callback.integrations.lightning import IFIDCallback  # noqa: E402
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig  # noqa: E402
from tests.helpers import RandomFeatures, fit_quietly, smooth_images  # noqa: E402

SIZE = 16
IN_DIM = 3 * SIZE * SIZE


class VAEModule(LightningModule):
    def __init__(self, return_latents: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.vae = TinyVAE(TinyVAEConfig(base_channels=8))
        self.return_latents = return_latents

    def training_step(self, batch, batch_idx):
        out = self.vae.loss(batch[0])
        if not self.return_latents:
            return out["loss"]
        return {"loss": out["loss"], "latents": out["latents"]}

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.vae.loss(batch[0])["loss"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _loaders():
    train = DataLoader(TensorDataset(smooth_images(64, 3, SIZE, seed=3)), batch_size=8)
    val = DataLoader(TensorDataset(smooth_images(8, 3, SIZE, seed=4)), batch_size=8)
    return train, val


def _callback(**kwargs):
    settings = dict(
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(IN_DIM),
        bank_capacity=48,
    )
    settings.update(kwargs)
    return IFIDCallback(**settings)


def _trainer(tmp_path, callbacks, max_steps, **kwargs):
    settings = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=max_steps,
        val_check_interval=4,
        num_sanity_val_steps=1,
        logger=TensorBoardLogger(tmp_path, name="tb", version=0),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    settings.update(kwargs)
    return Trainer(**settings)


def _events(tmp_path):
    files = glob.glob(os.path.join(tmp_path, "tb", "**", "events.out.tfevents.*"), recursive=True)
    assert files, "no TensorBoard event file written"
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _fit(trainer, module, **kwargs):
    fit_quietly(trainer, module, *_loaders(), **kwargs)


def test_logs_select_best_checkpoint_and_early_stopping(tmp_path):
    callback = _callback()
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/ifid", mode="min", save_top_k=1, filename="{step}"
    )
    stopping = EarlyStopping(monitor="val/ifid", mode="min", patience=50)
    trainer = _trainer(tmp_path, [callback, checkpoint, stopping], max_steps=12)
    _fit(trainer, VAEModule())

    acc = _events(tmp_path)
    tags = acc.Tags()
    assert {"val/ifid", "val/rfid"} <= set(tags["scalars"])
    assert "val/ifid_grid" in tags["images"]
    logged = [e.value for e in sorted(acc.Scalars("val/ifid"), key=lambda e: e.step)]
    history = callback.monitor.history
    # One evaluation per validation (every 4 of 12 steps), none from the sanity check.
    assert [h["step"] for h in history] == [4, 8, 12]
    assert logged == pytest.approx([h["ifid"] for h in history], rel=1e-6)
    best = min(history, key=lambda h: h["ifid"])
    assert os.path.basename(checkpoint.best_model_path) == f"step={best['step']}.ckpt"
    assert float(checkpoint.best_model_score) == pytest.approx(best["ifid"], rel=1e-6)
    assert float(stopping.best_score) == pytest.approx(best["ifid"], rel=1e-6)


def test_resume_restores_bank_and_counters(tmp_path):
    first = _callback()
    last = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    _fit(_trainer(tmp_path, [first, last], max_steps=12), VAEModule())
    saved = first.monitor.state_dict()
    assert saved["steps_observed"] == 12 and len(saved["history"]) == 3

    class Probe(Callback):
        def on_train_start(self, trainer, pl_module):
            self.restored = second.monitor.state_dict()

    second, probe = _callback(), Probe()
    assert second.state_key == first.state_key
    trainer = _trainer(tmp_path, [second, probe, ModelCheckpoint(dirpath=tmp_path / "c2")], 16)
    _fit(trainer, VAEModule(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    restored = probe.restored
    assert torch.equal(restored["bank"]["vectors"], saved["bank"]["vectors"])
    assert torch.equal(restored["bank"]["ids"], saved["bank"]["ids"])
    for key in ("steps_observed", "step", "last_eval_step", "history"):
        assert restored[key] == saved[key]
    assert torch.equal(
        restored["real_statistics"]["real_features_cov_sum"],
        saved["real_statistics"]["real_features_cov_sum"],
    )
    # Training went on from there: 4 more batches, one more evaluation, ids kept unique.
    monitor = second.monitor
    assert monitor.steps_observed == 16
    assert [h["step"] for h in monitor.history] == [4, 8, 12, 16]
    assert len(set(monitor.bank.ids.tolist())) == len(monitor.bank) == 48


def test_misconfiguration_is_reported(tmp_path):
    with pytest.raises(ValueError, match="eval_images"):
        IFIDCallback(feature=RandomFeatures(IN_DIM))
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    # With the VAE given, the eval set is checked at construction; otherwise in setup().
    with pytest.raises(ValueError, match="at least 2 evaluation images"):
        _callback(vae=vae, eval_images=smooth_images(1, 3, SIZE))
    with pytest.warns(UserWarning, match="rank < 16"):
        _callback(vae=vae, eval_images=smooth_images(8, 3, SIZE))
    late = _callback(eval_images=smooth_images(1, 3, SIZE))
    with pytest.raises(ValueError, match="at least 2 evaluation images"):
        late.setup(None, VAEModule(), "fit")
    # The training step returns only the loss: the missing key is named with what exists.
    trainer = _trainer(tmp_path, [_callback()], max_steps=4, logger=False)
    with pytest.raises(KeyError, match=r"no 'latents' entry \(available: \['loss'\]\)"):
        _fit(trainer, VAEModule(return_latents=False))
    # Validation switched off: iFID would never be logged.
    trainer = _trainer(tmp_path, [_callback()], max_steps=4, logger=False, limit_val_batches=0)
    with pytest.raises(ValueError, match="limit_val_batches=0"):
        _fit(trainer, VAEModule())


def test_empty_bank_at_first_evaluation(tmp_path):
    callback = _callback()
    module = VAEModule()
    callback.setup(None, module, "fit")
    with pytest.raises(ValueError, match="latent bank is empty"):
        callback.monitor.evaluate()


class _RankReport(Callback):
    def __init__(self, path):
        self.path = path

    def on_train_end(self, trainer, pl_module):
        ifid_cb = next(c for c in trainer.callbacks if isinstance(c, IFIDCallback))
        torch.save(
            {"history": ifid_cb.monitor.history, "local_bank": len(ifid_cb.monitor.bank)},
            f"{self.path}.{trainer.global_rank}",
        )


def test_ddp_two_processes(tmp_path):
    report = str(tmp_path / "rank")
    trainer = _trainer(
        tmp_path,
        [_callback(bank_capacity=64), _RankReport(report)],
        max_steps=4,
        strategy="ddp_spawn",
        devices=2,
        num_sanity_val_steps=0,
    )
    _fit(trainer, VAEModule())
    tags = _events(tmp_path).Tags()["scalars"]
    assert {"val/ifid", "val/rfid"} <= set(tags)
    ranks = [torch.load(f"{report}.{r}", weights_only=False) for r in range(2)]
    # Same numbers on both ranks; the index searched both ranks' banks (4 steps x 8 images each).
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["local_bank"] == ranks[1]["local_bank"] == 32
    assert ranks[0]["history"][-1]["bank_size"] == 64
