"""Evaluating averaged weights (EMA / SWA): Lightning's WeightAveraging in either callback order,
ema_pytorch.EMA and AveragedModel through the monitor and each integration, raw and averaged
weights in one evaluation, and the exact bank re-encoded by the evaluated weights."""

import copy
import warnings

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import PixelValues, RandomFeatures, VAEModel, fit_quietly, smooth_images

SIZE = 16
IN_DIM = 3 * SIZE * SIZE
EVAL = smooth_images(24, 3, SIZE, seed=5)
TRAIN = smooth_images(64, 3, SIZE, seed=3)


def _settings(**kwargs):
    settings = dict(
        eval_images=EVAL, feature=RandomFeatures(IN_DIM), bank_capacity=48, eval_batch_size=8
    )
    settings.update(kwargs)
    return settings


def _trained_pair(steps=6):
    """A VAE after a few Adam steps and an EMA (decay 0.5) of its weights along the way."""
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    averaged = AveragedModel(vae, multi_avg_fn=get_ema_multi_avg_fn(0.5))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for x in TRAIN.split(8)[:steps]:
        opt.zero_grad()
        vae.loss(x)["loss"].backward()
        opt.step()
        averaged.update_parameters(vae)
    return vae, averaged


def _fill(monitor, vae):
    with torch.no_grad():
        for x in TRAIN.split(8)[:6]:
            monitor.observe(latents=vae.encode(x).mean)


def test_extra_weights_equal_separate_evaluations_and_share_real_features():
    vae, averaged = _trained_pair()
    plain = IFIDMonitor(vae, **_settings())
    on_ema = IFIDMonitor(vae, **_settings(eval_vae=averaged))
    both = IFIDMonitor(vae, **_settings(extra_vaes={"ema": averaged}))
    for monitor in (plain, on_ema, both):
        _fill(monitor, vae)
    raw, ema, joint = plain.evaluate(), on_ema.evaluate(), both.evaluate()
    assert joint["ifid"] == pytest.approx(raw["ifid"], rel=1e-9)
    assert joint["rfid"] == pytest.approx(raw["rfid"], rel=1e-9)
    assert joint["ifid_ema"] == pytest.approx(ema["ifid"], rel=1e-9)
    assert joint["rfid_ema"] == pytest.approx(ema["rfid"], rel=1e-9)
    assert abs(joint["ifid_ema"] - joint["ifid"]) > 1e-3 * joint["ifid"]  # the weights differ
    # One real-image pass serves both sets of weights: 3 batches of real images, then one
    # feature call per batch of decodes for each set of weights.
    batches = len(EVAL) // 8
    assert plain.metric.feature_net.calls == 2 * batches
    assert both.metric.feature_net.calls == 3 * batches
    # A second evaluation passes only decodes.
    both.evaluate()
    assert both.metric.feature_net.calls == 5 * batches


def test_ema_pytorch_and_callables_select_the_same_weights():
    ema_pytorch = pytest.importorskip("ema_pytorch")
    vae, _ = _trained_pair(steps=0)
    ema = ema_pytorch.EMA(vae, beta=0.5, update_after_step=0, update_every=1)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for x in TRAIN.split(8)[:6]:
        opt.zero_grad()
        vae.loss(x)["loss"].backward()
        opt.step()
        ema.update()
    direct = IFIDMonitor(vae, **_settings(eval_vae=ema.ema_model))
    wrapped = IFIDMonitor(vae, **_settings(eval_vae=ema))
    lazy = IFIDMonitor(vae, **_settings(eval_vae=lambda: ema))
    values = []
    for monitor in (direct, wrapped, lazy):
        _fill(monitor, vae)
        values.append(monitor.evaluate()["ifid"])
    assert values[1] == pytest.approx(values[0], rel=1e-12)
    assert values[2] == pytest.approx(values[0], rel=1e-12)


def test_exact_bank_is_re_encoded_by_the_evaluated_weights():
    vae, averaged = _trained_pair()
    monitor = IFIDMonitor(vae, **_settings(eval_vae=averaged, exact_bank=True))
    with torch.no_grad():
        for x in TRAIN.split(8)[:6]:
            monitor.observe(latents=vae.encode(x).mean, images=x)
    monitor.evaluate()
    with torch.no_grad():
        expected = averaged.module.encode(TRAIN[:48]).mean.reshape(48, -1)
    assert torch.allclose(monitor.bank.vectors, expected, atol=1e-6)
    assert not torch.allclose(vae.encode(TRAIN[:48]).mean.reshape(48, -1), expected, atol=1e-4)


def test_bad_weights_are_refused_with_the_fix():
    vae, _ = _trained_pair(steps=0)
    with pytest.raises(TypeError, match="AveragedModel or ema_pytorch.EMA"):
        IFIDMonitor(vae, **_settings(eval_vae=torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="identifiers"):
        IFIDMonitor(vae, **_settings(extra_vaes={"e m a": vae}))


# ---------------------------------------------------------------------- Lightning
@pytest.fixture
def lightning_parts():
    pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return EMAWeightAveraging


def _lightning_module():
    from lightning.pytorch import LightningModule

    class VAEModule(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.vae = TinyVAE(TinyVAEConfig(base_channels=8))
            self.val_weights = []

        def training_step(self, batch, batch_idx):
            out = self.vae.loss(batch[0])
            return {"loss": out["loss"], "latents": out["latents"]}

        def validation_step(self, batch, batch_idx):
            if batch_idx == 0 and not self.trainer.sanity_checking:
                # The weights val/loss measures.
                self.val_weights.append(copy.deepcopy(self.vae.state_dict()))
            self.log("val/loss", self.vae.loss(batch[0])["loss"])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return VAEModule()


def _fit_lightning(tmp_path, callbacks, module):
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader, TensorDataset

    trainer = Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=8,
        val_check_interval=4,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train = DataLoader(TensorDataset(TRAIN), batch_size=8)
    val = DataLoader(TensorDataset(smooth_images(8, 3, SIZE, seed=4)), batch_size=8)
    fit_quietly(trainer, module, train, val)


@pytest.mark.parametrize("raw_name", [None, "raw"], ids=["averaged", "averaged-and-raw"])
@pytest.mark.parametrize("ifid_first", [True, False], ids=["ifid-first", "averaging-first"])
def test_lightning_weight_averaging_measures_the_weights_of_val_loss(
    tmp_path, lightning_parts, ifid_first, raw_name
):
    from lightning.pytorch.callbacks import Callback

    from ifid_callback.integrations.lightning import IFIDCallback

    ema_callback = lightning_parts(decay=0.5)
    ifid = IFIDCallback(**_settings(), raw_name=raw_name)

    class Record(Callback):
        """What was logged at each validation, with what is needed to measure it again."""

        def __init__(self):
            self.rows = []

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.rows.append(
                    {
                        "ifid": float(trainer.callback_metrics["val/ifid"]),
                        "ifid_raw": trainer.callback_metrics.get("val/ifid_raw"),
                        "monitor": copy.deepcopy(ifid.monitor.state_dict()),
                        "raw": copy.deepcopy(pl_module.vae.state_dict()),
                    }
                )

    record = Record()
    order = [ifid, ema_callback] if ifid_first else [ema_callback, ifid]
    module = _lightning_module()
    _fit_lightning(tmp_path, [*order, record], module)
    assert len(record.rows) == 2 and len(module.val_weights) == 2

    for row, val_weights in zip(record.rows, module.val_weights):
        measured = []
        for weights in (val_weights, row["raw"]):
            vae = TinyVAE(TinyVAEConfig(base_channels=8))
            vae.load_state_dict(weights)
            again = IFIDMonitor(vae, **_settings())
            again.load_state_dict(row["monitor"])
            measured.append(again.evaluate()["ifid"])
        averaged, raw = measured
        assert row["ifid"] == pytest.approx(averaged, rel=1e-5)
        assert abs(raw - averaged) > 1e-3 * averaged  # the raw weights would give another number
        if raw_name is None:
            assert row["ifid_raw"] is None
        else:  # measured in the same validation, with the same bank and real statistics
            assert float(row["ifid_raw"]) == pytest.approx(raw, rel=1e-5)


def test_lightning_with_ema_pytorch_logs_both_weights(tmp_path, lightning_parts):
    ema_pytorch = pytest.importorskip("ema_pytorch")
    from lightning.pytorch.callbacks import Callback

    from ifid_callback.integrations.lightning import IFIDCallback

    module = _lightning_module()
    ema = ema_pytorch.EMA(module.vae, beta=0.5, update_after_step=0, update_every=1)

    class UpdateEMA(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            ema.update()

    ifid = IFIDCallback(**_settings(vae=module.vae, extra_vaes={"ema": ema}))
    logged = []

    class Record(Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                logged.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    _fit_lightning(tmp_path, [UpdateEMA(), ifid, Record()], module)
    assert len(logged) == 2
    for row, result in zip(logged, ifid.monitor.history):
        for key in ("ifid", "rfid", "ifid_ema", "rfid_ema"):
            assert row[f"val/{key}"] == pytest.approx(result[key], rel=1e-6)
        assert row["val/ifid_ema"] != pytest.approx(row["val/ifid"], rel=1e-3)


# ---------------------------------------------------------------------- Accelerate
def test_accelerate_loop_evaluates_the_averaged_model(tmp_path):
    pytest.importorskip("accelerate")
    from accelerate import Accelerator

    from ifid_callback.integrations.accelerate import AccelerateIFID

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    vae, optimizer = accelerator.prepare(vae, optimizer)
    averaged = AveragedModel(accelerator.unwrap_model(vae), multi_avg_fn=get_ema_multi_avg_fn(0.5))
    monitor = IFIDMonitor(
        accelerator.unwrap_model(vae),
        **_settings(eval_vae=averaged, extra_vaes={"raw": accelerator.unwrap_model(vae)}),
    )
    ifid = AccelerateIFID(monitor, accelerator, log_grid=False, register=False)
    results = []
    for step, x in enumerate(TRAIN.split(8), 1):
        out = accelerator.unwrap_model(vae).loss(x)
        optimizer.zero_grad()
        accelerator.backward(out["loss"])
        optimizer.step()
        averaged.update_parameters(accelerator.unwrap_model(vae))
        ifid.observe(latents=out["latents"], step=step)
        if step % 4 == 0:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*writes nothing.*")
                results.append(ifid.evaluate(step))
    # The plain keys measure the averaged model: the same as a monitor pointed at it alone.
    alone = IFIDMonitor(averaged.module, **_settings())
    alone.load_state_dict(monitor.state_dict())
    assert results[-1]["ifid"] == pytest.approx(alone.evaluate(8)["ifid"], rel=1e-9)
    assert results[-1]["ifid_raw"] != pytest.approx(results[-1]["ifid"], rel=1e-3)


# ---------------------------------------------------------------------- HF Trainer
def test_hf_trainer_evaluates_the_averaged_model(tmp_path):
    pytest.importorskip("transformers")
    from transformers import TrainerCallback, TrainingArguments

    from ifid_callback.integrations.transformers import IFIDTrainer, IFIDTrainerCallback

    model = VAEModel()
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5))

    class UpdateAverage(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            averaged.update_parameters(model)

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=8,
        learning_rate=1e-2,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="no",
        logging_steps=4,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    ifid = IFIDTrainerCallback(**_settings(eval_vae=averaged, extra_vaes={"raw": model}))
    trainer = IFIDTrainer(
        model=model,
        args=args,
        train_dataset=PixelValues(TRAIN),
        eval_dataset=PixelValues(smooth_images(8, 3, SIZE, seed=4)),
        callbacks=[UpdateAverage(), ifid],
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_ifid" in h]
    assert [h["step"] for h in evals] == [4, 8]
    for row, result in zip(evals, ifid.monitor.history):
        assert row["eval_ifid"] == pytest.approx(result["ifid"], rel=1e-9)
        assert row["eval_ifid_raw"] == pytest.approx(result["ifid_raw"], rel=1e-9)
        assert row["eval_ifid_raw"] != pytest.approx(row["eval_ifid"], rel=1e-3)


def test_weights_on_another_device_are_refused_before_any_work():
    vae, _ = _trained_pair(steps=0)
    elsewhere = TinyVAE(TinyVAEConfig(base_channels=8)).to("meta")
    monitor = IFIDMonitor(vae, **_settings(extra_vaes={"ema": elsewhere}))
    _fill(monitor, vae)
    before = monitor.state_dict()
    with pytest.raises(ValueError, match=r"extra_vaes\['ema'\] are on meta .* training device"):
        monitor.evaluate(step=99)
    after = monitor.state_dict()
    assert (
        after["step"] == before["step"]
        and after["history"] == []
        and after["real_statistics"] is None
    )
    with pytest.raises(ValueError, match="are on meta"):
        monitor.measure(elsewhere)
