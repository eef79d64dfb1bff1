"""IFIDTrainer + IFIDTrainerCallback in a real (tiny, CPU) Hugging Face Trainer run."""

import glob
import os
import warnings

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments  # noqa: E402

from ifid_callback.integrations.transformers import (  # noqa: E402
    MONITOR_FILENAME,
    IFIDTrainer,
    IFIDTrainerCallback,
)
from tests.helpers import PixelValues, RandomFeatures, VAEModel, smooth_images  # noqa: E402

SIZE = 16
IN_DIM = 3 * SIZE * SIZE


def Images(n: int, seed: int) -> PixelValues:
    return PixelValues(smooth_images(n, 3, SIZE, seed=seed))


def _args(tmp_path, **kwargs):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=12,
        learning_rate=3e-3,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
        logging_steps=4,
        metric_for_best_model="eval_ifid",
        greater_is_better=False,
        load_best_model_at_end=True,
        report_to=["tensorboard"],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(kwargs)
    return TrainingArguments(**settings)


def _callback(**kwargs):
    settings = dict(
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(IN_DIM),
        bank_capacity=48,
    )
    settings.update(kwargs)
    return IFIDTrainerCallback(**settings)


def _train(trainer, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is not a PreTrainedModel.*")
        return trainer.train(**kwargs)


def test_best_checkpoint_log_history_and_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    callback = _callback()
    trainer = IFIDTrainer(
        model=VAEModel(),
        args=_args(tmp_path),
        train_dataset=Images(64, 3),
        eval_dataset=Images(8, 4),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=10), callback],
    )
    _train(trainer)

    evals = [h for h in trainer.state.log_history if "eval_ifid" in h]
    assert [h["step"] for h in evals] == [4, 8, 12]
    assert all(h["eval_rfid"] > 0 for h in evals)
    assert [h["eval_ifid"] for h in evals] == [r["ifid"] for r in callback.monitor.history]
    best = min(evals, key=lambda h: h["eval_ifid"])
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    assert trainer.state.best_metric == best["eval_ifid"]
    # load_best_model_at_end: the final weights are the best checkpoint's.
    from safetensors.torch import load_file

    saved = load_file(os.path.join(trainer.state.best_model_checkpoint, "model.safetensors"))
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    # The monitor was saved next to each checkpoint.
    assert os.path.isfile(os.path.join(trainer.state.best_model_checkpoint, MONITOR_FILENAME))

    files = glob.glob(str(tmp_path / "tb" / "**" / "events.out.tfevents.*"), recursive=True)
    acc = EventAccumulator(os.path.dirname(files[0]), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("eval/ifid")}
    assert logged == pytest.approx({h["step"]: h["eval_ifid"] for h in evals}, rel=1e-6)
    assert "eval/rfid" in acc.Tags()["scalars"]


def test_resume_restores_the_monitor(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    args = _args(tmp_path, max_steps=8, save_steps=8, report_to=[], load_best_model_at_end=False)
    first = _callback()
    data = dict(train_dataset=Images(64, 3), eval_dataset=Images(8, 4))
    _train(IFIDTrainer(model=VAEModel(), args=args, callbacks=[first], **data))
    saved = torch.load(tmp_path / "out" / "checkpoint-8" / MONITOR_FILENAME, weights_only=True)
    assert saved["steps_observed"] == 8 and len(saved["history"]) == 2

    second = _callback()
    args = _args(tmp_path, max_steps=12, report_to=[], load_best_model_at_end=False)
    _train(
        IFIDTrainer(model=VAEModel(), args=args, callbacks=[second], **data),
        resume_from_checkpoint=True,
    )
    assert second.monitor.steps_observed == 12
    assert second.monitor.history[:2] == saved["history"]
    assert [h["step"] for h in second.monitor.history] == [4, 8, 12]


def test_misconfiguration_is_reported(tmp_path):
    data = dict(train_dataset=Images(16, 3), eval_dataset=Images(8, 4))
    with pytest.raises(ValueError, match="greater_is_better=False"):
        IFIDTrainer(
            model=VAEModel(),
            args=_args(tmp_path, greater_is_better=None, report_to=[]),
            callbacks=[_callback()],
            **data,
        )
    with pytest.raises(ValueError, match="eval_images"):
        IFIDTrainerCallback(feature=RandomFeatures(IN_DIM))
    # A plain Trainer never computes iFID: the callback says which Trainer to use.
    plain = Trainer(
        model=VAEModel(),
        args=_args(
            tmp_path,
            max_steps=4,
            report_to=[],
            load_best_model_at_end=False,
            metric_for_best_model=None,
            greater_is_better=None,
        ),
        callbacks=[_callback()],
        **data,
    )
    with pytest.raises(RuntimeError, match="IFIDTrainer"):
        _train(plain)
    # Evaluating before any training step: see the test below (warns, logs no eval_ifid).


def test_an_evaluation_before_training_logs_no_ifid_and_does_not_stop_the_run(tmp_path):
    """eval_on_start=True (and a baseline trainer.evaluate()) come before any training latent:
    they warn and log without iFID, and the run goes on to evaluate iFID after training steps."""
    callback = _callback()
    trainer = IFIDTrainer(
        model=VAEModel(),
        args=_args(tmp_path, eval_on_start=True, load_best_model_at_end=False),
        train_dataset=Images(64, 3),
        eval_dataset=Images(8, 4),
        callbacks=[callback],
    )
    with pytest.warns(UserWarning, match=r"No training latents yet at step 0.*'eval_ifid'"):
        baseline = trainer.evaluate()
    assert "eval_ifid" not in baseline and "eval_runtime" in baseline
    with pytest.warns(UserWarning, match=r"No training latents yet at step 0"):
        _train(trainer)
    evals = [h for h in trainer.state.log_history if "eval_runtime" in h]
    assert [h["step"] for h in evals] == [0, 4, 8, 12]
    assert "eval_ifid" not in evals[0]
    assert all(h["eval_ifid"] > 0 for h in evals[1:])
