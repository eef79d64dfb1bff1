"""Lightning: grid and scalars share their step; trainer.validate(ckpt_path=...) measures iFID."""

import warnings

import pytest

pytest.importorskip("lightning")
pytest.importorskip("tensorboard")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from tests.test_lightning import (  # noqa: E402
    VAEModule,
    _callback,
    _events,
    _fit,
    _loaders,
    _trainer,
)


def _validate(trainer, module, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        return trainer.validate(module, _loaders()[1], verbose=False, **kwargs)


@pytest.fixture
def fitted(tmp_path):
    callback = _callback()
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/ifid", mode="min", save_top_k=1, filename="{step}"
    )
    trainer = _trainer(tmp_path, [callback, checkpoint], max_steps=12)
    _fit(trainer, VAEModule())
    return tmp_path, trainer, callback, checkpoint


def test_grid_and_scalars_are_logged_at_the_same_steps(fitted):
    tmp_path, _, callback, _ = fitted
    acc = _events(tmp_path)
    scalar_steps = [e.step for e in acc.Scalars("val/ifid")]
    assert len(scalar_steps) == len(callback.monitor.history) == 3
    assert [e.step for e in acc.Scalars("val/rfid")] == scalar_steps
    assert [e.step for e in acc.Images("val/ifid_grid")] == scalar_steps
    # And the user's own validation metrics sit at the same steps.
    assert [e.step for e in acc.Scalars("val/loss")] == scalar_steps


def test_validate_best_checkpoint_measures_ifid(fitted):
    tmp_path, trainer, callback, checkpoint = fitted
    history = callback.monitor.history
    best = min(history, key=lambda h: h["ifid"])
    assert checkpoint.best_model_path.endswith(f"step={best['step']}.ckpt")

    # Same process: the best weights and the bank saved with them give the best evaluation again.
    (metrics,) = _validate(trainer, trainer.lightning_module, ckpt_path="best")
    assert metrics["val/ifid"] == pytest.approx(best["ifid"], rel=1e-6)
    assert metrics["val/rfid"] == pytest.approx(best["rfid"], rel=1e-6)

    # A fresh process's Trainer, callback and module: everything comes from the checkpoint.
    fresh_trainer = _trainer(tmp_path / "again", [_callback()], max_steps=12, logger=False)
    (again,) = _validate(fresh_trainer, VAEModule(), ckpt_path=checkpoint.best_model_path)
    assert again["val/ifid"] == pytest.approx(best["ifid"], rel=1e-6)


def test_validate_without_any_bank_warns_and_logs_no_ifid(tmp_path):
    trainer = _trainer(tmp_path, [_callback()], max_steps=4, logger=False)
    with pytest.warns(UserWarning, match=r"no training latents.*ckpt_path="):
        (metrics,) = _validate(trainer, VAEModule())
    assert "val/ifid" not in metrics and "val/loss" in metrics
