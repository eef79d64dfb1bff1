"""Framework set-ups that would silently never log iFID, or keep the worst model: each is refused
or warned about with the fix, in real (tiny, CPU) framework runs."""

import warnings

import pytest
import torch

from tests.helpers import RandomFeatures, smooth_images

SIZE = 16
IN_DIM = 3 * SIZE * SIZE


# ---------------------------------------------------------------------- Lightning
@pytest.fixture
def lightning_parts():
    pytest.importorskip("lightning")
    from tests import test_lightning as tl

    return tl


@pytest.mark.parametrize("kind", ["checkpoint", "early_stopping"])
@pytest.mark.parametrize("key", ["val/ifid", "val/rfid"])
def test_lightning_refuses_mode_max_on_our_keys(tmp_path, lightning_parts, kind, key):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    tl = lightning_parts
    watcher = (
        ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=key, mode="max")
        if kind == "checkpoint"
        else EarlyStopping(monitor=key, mode="max")
    )
    callback = tl._callback()
    trainer = tl._trainer(tmp_path, [callback, watcher], max_steps=4, logger=False)
    module = tl.VAEModule()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ValueError, match=rf"monitor='{key}', mode='min'") as info:
        tl._fit(trainer, module)
    assert "lower-is-better" in str(info.value) and "worst" in str(info.value)
    # Refused before training: nothing learned, nothing banked.
    assert callback.monitor.steps_observed == 0 and len(callback.monitor.bank) == 0
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_lightning_mode_min_and_other_keys_are_accepted(tmp_path, lightning_parts):
    from lightning.pytorch.callbacks import ModelCheckpoint

    tl = lightning_parts
    callbacks = [
        tl._callback(),
        ModelCheckpoint(dirpath=tmp_path / "a", monitor="val/ifid", mode="min"),
        ModelCheckpoint(dirpath=tmp_path / "b", monitor="val/loss", mode="max"),  # not ours
    ]
    tl._fit(tl._trainer(tmp_path, callbacks, max_steps=4, logger=False), tl.VAEModule())
    assert [h["step"] for h in callbacks[0].monitor.history] == [4]


def test_lightning_fit_without_validation_loop_warns(tmp_path, lightning_parts):
    tl = lightning_parts
    callback = tl._callback()
    trainer = tl._trainer(tmp_path, [callback], max_steps=4, logger=False)
    train, _ = tl._loaders()
    with pytest.warns(UserWarning, match=r"no validation loop.*trainer\.validate") as record:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer.fit(tl.VAEModule(), train)  # no val_dataloaders
    ours = [str(w.message) for w in record if "IFIDCallback" in str(w.message)]
    assert len(ours) == 1 and "val_dataloaders" in ours[0]
    assert callback.monitor.history == []  # indeed never evaluated


def test_lightning_fit_with_validation_does_not_warn(tmp_path, lightning_parts):
    tl = lightning_parts
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*IFIDCallback.*")
        tl._fit(tl._trainer(tmp_path, [tl._callback()], max_steps=4, logger=False), tl.VAEModule())


# ---------------------------------------------------------------------- HF Trainer
def test_trainer_with_eval_strategy_no_warns(tmp_path):
    pytest.importorskip("transformers")
    from ifid_callback.integrations.transformers import IFIDTrainer
    from tests.test_transformers import Images, VAEModel, _args, _callback

    args = _args(
        tmp_path,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        metric_for_best_model=None,
        greater_is_better=None,
        report_to=[],
    )
    with pytest.warns(UserWarning, match=r"eval_strategy='no'.*eval_strategy='steps'"):
        IFIDTrainer(
            model=VAEModel(), args=args, train_dataset=Images(16, 3), callbacks=[_callback()]
        )
    with warnings.catch_warnings():  # evaluating during training: no warning
        warnings.filterwarnings("error", ".*eval_strategy.*")
        IFIDTrainer(
            model=VAEModel(),
            args=_args(tmp_path, report_to=[]),
            train_dataset=Images(16, 3),
            eval_dataset=Images(8, 4),
            callbacks=[_callback()],
        )


# ---------------------------------------------------------------------- Accelerate
def _accelerate_run(accelerator, steps=4):
    from ifid_callback.integrations.accelerate import AccelerateIFID
    from ifid_callback.monitor import IFIDMonitor
    from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig

    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    monitor = IFIDMonitor(
        vae,
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(IN_DIM),
        bank_capacity=48,
        eval_every_n_steps=2,
    )
    ifid = AccelerateIFID(monitor, accelerator, register=False)
    images = smooth_images(8 * steps, 3, SIZE, seed=3)
    for step, x in enumerate(images.split(8), 1):
        with torch.no_grad():
            ifid.observe(latents=vae.encode(x).mean, step=step)
        ifid.maybe_evaluate(step)
    return ifid


@pytest.fixture
def fresh_accelerate():
    pytest.importorskip("accelerate")
    yield
    from tests.test_examples import _reset_accelerate

    _reset_accelerate()


def test_accelerate_without_init_trackers_warns_once(tmp_path, fresh_accelerate):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path))
    with pytest.warns(UserWarning, match=r"init_trackers") as record:
        ifid = _accelerate_run(accelerator)
    ours = [w for w in record if "accelerator.log writes nothing" in str(w.message)]
    assert len(ours) == 1  # two evaluations, one warning
    assert "log_with=['tensorboard']" in str(ours[0].message)
    assert [h["step"] for h in ifid.monitor.history] == [2, 4]  # the numbers are still there
    assert not list(tmp_path.rglob("events.out.tfevents.*"))  # and indeed nothing was written


def test_accelerate_with_trackers_does_not_warn(tmp_path, fresh_accelerate):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*accelerator.log writes nothing.*")
        _accelerate_run(accelerator)
    accelerator.end_training()
    assert list(tmp_path.rglob("events.out.tfevents.*"))
