"""HF Trainer: an evaluation measures the weights loaded when it runs (load_best_model_at_end)."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import TrainerCallback  # noqa: E402

from ifid_callback.integrations.transformers import IFIDTrainer  # noqa: E402
from tests.test_transformers import Images, VAEModel, _args, _callback, _train  # noqa: E402


class WorsenAtTheLastStep(TrainerCallback):
    """Spoils the decoder at the last optimizer step, so the last checkpoint is not the best."""

    def __init__(self, last_step: int) -> None:
        self.last_step = last_step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.last_step:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in model.vae.decoder.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.5)


def test_evaluate_after_load_best_model_measures_the_best_model(tmp_path):
    callback = _callback()
    trainer = IFIDTrainer(
        model=VAEModel(),
        args=_args(tmp_path, report_to=[]),
        train_dataset=Images(64, 3),
        eval_dataset=Images(8, 4),
        callbacks=[callback, WorsenAtTheLastStep(12)],
    )
    _train(trainer)
    history = callback.monitor.history
    last = history[-1]
    best = min(history, key=lambda h: h["ifid"])
    assert last["step"] == 12 and best["step"] != 12  # the run did what the test needs
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")

    after = trainer.evaluate()
    # The loaded best model was measured now, not the cached number of the last step's model.
    assert after["eval_ifid"] != pytest.approx(last["ifid"], rel=1e-3)
    fresh = callback.monitor.evaluate()  # the same weights, bank and evaluation set, measured again
    assert after["eval_ifid"] == pytest.approx(fresh["ifid"], rel=1e-9)
    assert after["eval_rfid"] == pytest.approx(fresh["rfid"], rel=1e-9)

    # Weights changed again by hand: the next evaluate() at the same global step follows them.
    with torch.no_grad():
        for p in trainer.model.vae.decoder.parameters():
            p.mul_(0.5)
    again = trainer.evaluate()
    assert again["eval_ifid"] != pytest.approx(after["eval_ifid"], rel=1e-3)
    assert again["eval_ifid"] == pytest.approx(callback.monitor.evaluate()["ifid"], rel=1e-9)


def test_several_eval_datasets_share_one_evaluation(tmp_path):
    callback = _callback()
    trainer = IFIDTrainer(
        model=VAEModel(),
        args=_args(
            tmp_path,
            report_to=[],
            max_steps=4,
            load_best_model_at_end=False,
            metric_for_best_model="eval_a_ifid",
        ),
        train_dataset=Images(64, 3),
        eval_dataset={"a": Images(8, 4), "b": Images(8, 6)},
        callbacks=[callback],
    )
    _train(trainer)
    before = len(callback.monitor.history)
    metrics = trainer.evaluate()
    assert metrics["eval_a_ifid"] == metrics["eval_b_ifid"]
    assert len(callback.monitor.history) == before + 1  # one iFID pass for both datasets
