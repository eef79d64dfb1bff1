"""Scalars and the titled grid reach MLflow, offline in a local file store, from real (tiny, CPU)
runs: Lightning's ``MLFlowLogger``, Accelerate's ``log_with="mlflow"`` and the Hugging Face
Trainer's ``report_to=["mlflow"]``; the grid is a PNG artifact at the step of the scalars."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import PixelValues, RandomFeatures, VAEModel, fit_quietly, smooth_images

# MLflow 3 sends usage telemetry from the moment it is imported: the tests stay offline.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip("mlflow")

SIZE = 16
TRAIN = smooth_images(64, 3, SIZE, seed=3)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow file store as the tracking URI of the run (and of the fluent API)."""
    uri = f"file://{tmp_path / 'mlruns'}"
    # MLflow 3 refuses file stores unless asked; a database or a server needs no such switch.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ifid-test")
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # Lightning's logger sets the process-wide URI: forget it


def _monitor(vae, **kwargs) -> IFIDMonitor:
    settings = dict(
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(3 * SIZE * SIZE),
        bank_capacity=48,
        grid_rows=2,
    )
    settings.update(kwargs)
    return IFIDMonitor(vae, **settings)


def _assert_logged(
    uri: str, prefix: str, grid_key: str, monitor: IFIDMonitor, steps: list[int]
) -> None:
    """The one run in the store has iFID/rFID/PSNR of each evaluation (``prefix + "ifid"``, ...)
    at ``steps`` (the framework's logging steps) and one ``grid_key`` PNG per evaluation at the
    same steps, the last one pixel for pixel the monitor's last grid."""
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    ifid = client.get_metric_history(run_id, f"{prefix}ifid")
    assert sorted(m.step for m in ifid) == steps
    assert [m.value for m in sorted(ifid, key=lambda m: m.step)] == pytest.approx(
        [h["ifid"] for h in monitor.history], rel=1e-6
    )
    for name in ("rfid", "psnr", "ssim"):
        assert len(client.get_metric_history(run_id, f"{prefix}{name}")) == len(steps), name

    pngs = {}
    for artifact in client.list_artifacts(run_id, "images"):
        name = artifact.path.rsplit("/", 1)[-1]
        if name.endswith(".png") and grid_key.replace("/", "~") in name:
            step = int(re.search(r"step\D(\d+)\D", name).group(1))
            pngs[step] = artifact.path
    assert sorted(pngs) == steps
    local = client.download_artifacts(run_id, pngs[steps[-1]])
    logged = np.asarray(Image.open(local).convert("RGB"))
    grid = monitor.render_grid(labels=True)
    expected = (grid.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    assert logged.shape == expected.shape and np.array_equal(logged, expected)


def test_lightning_mlflow_logger(tmp_path, store):
    pytest.importorskip("lightning")
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    from ifid_callback.integrations.lightning import IFIDCallback

    class VAEModule(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.vae = TinyVAE(TinyVAEConfig(base_channels=8))

        def training_step(self, batch, batch_idx):
            out = self.vae.loss(batch[0])
            return {"loss": out["loss"], "latents": out["latents"]}

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", self.vae.loss(batch[0])["loss"])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    module = VAEModule()
    callback = IFIDCallback(_monitor(module.vae))
    trainer = Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=8,
        val_check_interval=4,
        num_sanity_val_steps=0,
        logger=MLFlowLogger(experiment_name="ifid-test", tracking_uri=store),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    train = DataLoader(TensorDataset(TRAIN), batch_size=8)
    val = DataLoader(TensorDataset(smooth_images(8, 3, SIZE, seed=4)), batch_size=8)
    fit_quietly(trainer, module, train, val)
    assert [h["step"] for h in callback.monitor.history] == [4, 8]
    # Lightning logs a validation's metrics at the count of optimizer steps before it.
    _assert_logged(store, "val/", "val/ifid_grid", callback.monitor, [3, 7])


def test_accelerate_mlflow_tracker(store):
    pytest.importorskip("accelerate")
    from accelerate import Accelerator

    from ifid_callback.integrations.accelerate import AccelerateIFID

    accelerator = Accelerator(cpu=True, log_with="mlflow")
    accelerator.init_trackers("ifid-test")
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    vae, optimizer = accelerator.prepare(vae, optimizer)
    monitor = _monitor(accelerator.unwrap_model(vae), eval_every_n_steps=4)
    ifid = AccelerateIFID(monitor, accelerator, register=False)
    for step, x in enumerate(TRAIN.split(8), 1):
        out = accelerator.unwrap_model(vae).loss(x)
        optimizer.zero_grad()
        accelerator.backward(out["loss"])
        optimizer.step()
        ifid.observe(latents=out["latents"], step=step)
        ifid.maybe_evaluate(step)
    accelerator.end_training()
    assert [h["step"] for h in monitor.history] == [4, 8]
    _assert_logged(store, "val/", "val/ifid_grid", monitor, [4, 8])


def test_hf_trainer_report_to_mlflow(tmp_path, store):
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    from ifid_callback.integrations.transformers import IFIDTrainer, IFIDTrainerCallback

    model = VAEModel()
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=8,
        learning_rate=3e-3,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="no",
        logging_steps=4,
        report_to=["mlflow"],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    callback = IFIDTrainerCallback(_monitor(model.vae))
    trainer = IFIDTrainer(
        model=model,
        args=args,
        train_dataset=PixelValues(TRAIN),
        eval_dataset=PixelValues(smooth_images(8, 3, SIZE, seed=4)),
        callbacks=[callback],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is not a PreTrainedModel.*")
        trainer.train()
    mlflow.end_run()
    assert [h["step"] for h in callback.monitor.history] == [4, 8]
    # The Trainer's MLflow callback keeps the metrics' own names (eval_ifid, ...).
    _assert_logged(store, "eval_", "eval/ifid_grid", callback.monitor, [4, 8])
