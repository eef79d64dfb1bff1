"""Scalars and titled image grids through each logger's own API, in real (tiny, CPU) Lightning,
Accelerate and Hugging Face Trainer runs: TensorBoard, Weights & Biases (offline) and CSV, with
every number the metric computes logged and the grid at the step of the scalars."""

import csv
import glob
import os

import pytest
import torch

from ifid_callback.grid import COLUMN_TITLES, image_grid
from ifid_callback.monitor import IFIDMonitor
from ifid_callback.tiny_vae import TinyVAE, TinyVAEConfig
from tests.helpers import PixelValues, RandomFeatures, VAEModel, fit_quietly, smooth_images

SIZE = 16
IN_DIM = 3 * SIZE * SIZE
TRAIN = smooth_images(64, 3, SIZE, seed=3)


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "ifid-test")
    import wandb

    wandb.teardown()  # settings (WANDB_DIR) are read once per wandb session: start a new one
    yield wandb
    wandb.finish()
    wandb.teardown()


def _monitor(vae, **kwargs):
    settings = dict(
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(IN_DIM),
        bank_capacity=48,
        grid_rows=2,
    )
    settings.update(kwargs)
    monitor = IFIDMonitor(vae, **settings)
    # A metric that computes one more number: every integration logs it without being told.
    compute = monitor.metric.compute
    monitor.metric.compute = lambda: {**compute(), "psnr": torch.tensor(30.0, dtype=torch.float64)}
    return monitor


def _tensorboard(root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(os.path.join(root, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no TensorBoard event file under {root}"
    scalars, images = {}, {}
    for path in files:
        acc = EventAccumulator(os.path.dirname(path), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(acc.Images(tag))
    return scalars, images


def _wandb_steps(rows, key, step_key):
    """Steps (of ``step_key``) of the rows holding ``key``; for an image, its type too."""
    hits = [r for r in rows if key in r or f"{key}/_type" in r]
    return [r[step_key] for r in hits], [r.get(f"{key}/_type") for r in hits]


def test_titled_grid_writes_each_title_above_its_column():
    x = smooth_images(2, 3, SIZE, seed=1)
    plain = image_grid([x, -x, x, -x], padding=2)
    titled = image_grid([x, -x, x, -x], padding=2, titles=COLUMN_TITLES)
    # Cells are enlarged by an integer factor so that "reconstruction" fits above its column.
    scale = ((titled.shape[2] - 2) // 4 - 2) // SIZE
    assert scale > 1 and titled.shape[2] == 4 * (SIZE * scale + 2) + 2
    header = titled.shape[1] - (2 * (SIZE * scale + 2) + 2)
    assert header > 0
    body = titled[:, header:]
    side = SIZE * scale
    scaled = torch.nn.functional.interpolate((x + 1) / 2, scale_factor=scale, mode="nearest")
    assert torch.allclose(body[:, 2 : 2 + side, 2 : 2 + side], scaled[0], atol=1e-6)
    assert torch.allclose(
        body[:, 2 : 2 + side, 4 + side : 4 + 2 * side], (1 - scaled[0]), atol=1e-6
    )
    for j in range(4):  # dark text above every column
        above = titled[:, :header, 2 + j * (side + 2) : 2 + j * (side + 2) + side]
        assert float(above.min()) < 0.3
    assert float(titled[:, :header].max()) == 1.0  # on the white padding colour
    # Without titles the layout is unchanged.
    assert plain.shape == (3, 2 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2)
    with pytest.raises(ValueError, match="one each"):
        image_grid([x, x], titles=("x",))


def test_lightning_tensorboard_csv_and_wandb(tmp_path, offline_wandb):
    pytest.importorskip("lightning")
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
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
    loggers = [
        TensorBoardLogger(tmp_path, name="tb", version=0),
        CSVLogger(tmp_path, name="csv", version=0),
        WandbLogger(save_dir=str(tmp_path), offline=True, project="ifid-test"),
    ]
    trainer = Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=8,
        val_check_interval=4,
        num_sanity_val_steps=0,
        logger=loggers,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    train = DataLoader(TensorDataset(TRAIN), batch_size=8)
    val = DataLoader(TensorDataset(smooth_images(8, 3, SIZE, seed=4)), batch_size=8)
    fit_quietly(trainer, module, train, val)
    offline_wandb.finish()
    history = callback.monitor.history
    assert len(history) == 2

    scalars, images = _tensorboard(tmp_path / "tb")
    steps = [s for s, _ in sorted(scalars["val/ifid"])]
    assert [v for _, v in sorted(scalars["val/ifid"])] == pytest.approx(
        [h["ifid"] for h in history], rel=1e-6
    )
    assert [v for _, v in sorted(scalars["val/psnr"])] == pytest.approx([30.0, 30.0])
    assert sorted(e.step for e in images["val/ifid_grid"]) == steps

    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/ifid")]
    assert [float(r["val/ifid"]) for r in rows] == pytest.approx([h["ifid"] for h in history])
    assert all(float(r["val/psnr"]) == 30.0 for r in rows)

    from tests.wandb_offline import history as wandb_history

    rows = wandb_history(tmp_path)
    scalar_steps, _ = _wandb_steps(rows, "val/ifid", "trainer/global_step")
    grid_steps, kinds = _wandb_steps(rows, "val/ifid_grid", "trainer/global_step")
    assert scalar_steps == steps and grid_steps == steps
    assert kinds == ["images/separated"] * 2 or kinds == ["image-file"] * 2
    logged = [r["val/ifid"] for r in rows if "val/ifid" in r]
    assert logged == pytest.approx([h["ifid"] for h in history], rel=1e-6)


def _assert_tracked(tmp_path, tb_dir: str, prefix: str, wandb_step: str, history) -> None:
    """TensorBoard and W&B both got the scalars and the grid at steps 4 and 8, the monitor's."""
    scalars, images = _tensorboard(tmp_path / tb_dir)
    assert [s for s, _ in sorted(scalars[f"{prefix}/ifid"])] == [4, 8]
    logged = [v for _, v in sorted(scalars[f"{prefix}/ifid"])]
    assert logged == pytest.approx([h["ifid"] for h in history], rel=1e-6)
    assert [v for _, v in sorted(scalars[f"{prefix}/psnr"])] == pytest.approx([30.0, 30.0])
    assert sorted(e.step for e in images[f"{prefix}/ifid_grid"]) == [4, 8]

    from tests.wandb_offline import history as wandb_history

    rows = wandb_history(tmp_path)
    scalar_steps, _ = _wandb_steps(rows, f"{prefix}/ifid", wandb_step)
    grid_steps, _ = _wandb_steps(rows, f"{prefix}/ifid_grid", wandb_step)
    assert scalar_steps == [4, 8] and grid_steps == [4, 8]


def test_accelerate_tensorboard_and_wandb_trackers(tmp_path, offline_wandb):
    pytest.importorskip("accelerate")
    from accelerate import Accelerator

    from ifid_callback.integrations.accelerate import AccelerateIFID

    accelerator = Accelerator(cpu=True, log_with=["tensorboard", "wandb"], project_dir=tmp_path)
    accelerator.init_trackers("run", init_kwargs={"wandb": {"dir": str(tmp_path)}})
    torch.manual_seed(0)
    vae = TinyVAE(TinyVAEConfig(base_channels=8))
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    vae, optimizer = accelerator.prepare(vae, optimizer)
    ifid = AccelerateIFID(
        _monitor(accelerator.unwrap_model(vae), eval_every_n_steps=4), accelerator, register=False
    )
    for step, x in enumerate(TRAIN.split(8), 1):
        out = accelerator.unwrap_model(vae).loss(x)
        optimizer.zero_grad()
        accelerator.backward(out["loss"])
        optimizer.step()
        ifid.observe(latents=out["latents"], step=step)
        ifid.maybe_evaluate(step)
    accelerator.end_training()
    history = ifid.monitor.history

    _assert_tracked(tmp_path, "run", "val", "_step", history)
    from tests.wandb_offline import history as wandb_history

    assert [r["val/psnr"] for r in wandb_history(tmp_path) if "val/psnr" in r] == [30.0, 30.0]


def test_hf_trainer_report_to_tensorboard_and_wandb(tmp_path, offline_wandb):
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
        report_to=["tensorboard", "wandb"],
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
    trainer.train()
    offline_wandb.finish()
    history = callback.monitor.history

    _assert_tracked(tmp_path, "out", "eval", "train/global_step", history)
