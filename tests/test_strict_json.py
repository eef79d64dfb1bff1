"""Strict JSON where we write JSON: a lossless PSNR (+inf) becomes null plus a flag, in
``ifid eval --json`` and in the Hugging Face Trainer's ``trainer_state.json``."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from ifid_callback import cli
from tests.helpers import RandomFeatures, smooth_images
from tests.test_cli import SMOKE, save_patches
from tests.test_lossless_reconstruction import IdentityVAE

SIZE = 16


def strict_loads(text: str):
    """``json.loads`` that refuses ``Infinity``, ``-Infinity`` and ``NaN`` (as strict parsers do)."""

    def refuse(name: str):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def identity_vae() -> IdentityVAE:
    """For ``ifid eval --vae tests.test_strict_json:identity_vae``: reconstructs exactly."""
    return IdentityVAE()


def test_strict_values_convention():
    from ifid_callback import json_numbers

    values = {
        "psnr": math.inf,
        "eval_psnr_ema": torch.tensor(math.inf),
        "ifid": 1.5,
        "loss": float("nan"),
        "grad_norm": -math.inf,
        "name": "x",
        "flag": True,
        "nested": {"val/psnr": math.inf, "rows": [1.0, math.nan]},
    }
    out = json_numbers.strict_values(values)
    assert out["psnr"] is None and out["psnr_lossless"] is True
    assert out["eval_psnr_ema"] is None and out["eval_psnr_ema_lossless"] is True
    assert out["loss"] is None and out["loss_nonfinite"] == "nan"
    assert out["grad_norm"] is None and out["grad_norm_nonfinite"] == "-inf"
    assert out["nested"] == {"val/psnr": None, "val/psnr_lossless": True, "rows": [1.0, None]}
    assert (out["ifid"], out["name"], out["flag"]) == (1.5, "x", True)
    assert "ifid_lossless" not in out and "ifid_nonfinite" not in out
    assert values["psnr"] == math.inf  # the input is left as it was
    assert not json_numbers.is_strict(values) and json_numbers.is_strict(out)
    assert strict_loads(json_numbers.dumps(values)) == json.loads(json.dumps(out))
    # A PSNR of -inf or NaN is not "lossless": it gets the generic flag.
    assert json_numbers.strict_values({"psnr": math.nan})["psnr_nonfinite"] == "nan"


def test_ifid_eval_json_of_a_lossless_vae_is_strict(tmp_path, capsys):
    images = save_patches(tmp_path / "images", 16)
    out = tmp_path / "result.json"
    argv = ["eval", "--vae", "tests.test_strict_json:identity_vae", "--images", str(images)]
    argv += ["--feature", SMOKE, "--index", "exact", "--json", str(out), "--no-progress"]
    assert cli.main([*argv, "--device", "cpu"]) == 0
    assert "PSNR inf dB" in capsys.readouterr().out  # the console line shows the float
    result = strict_loads(out.read_text())
    assert result["psnr"] is None and result["psnr_lossless"] is True
    assert result["mse"] == 0.0 and result["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isfinite(result["ifid"]) and result["rfid"] == pytest.approx(0.0, abs=1e-6)


class IdentityModel(nn.Module):
    """A Trainer model whose VAE reconstructs exactly (its one parameter never moves: zero loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.vae = IdentityVAE()

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.vae.encode(pixel_values)
        loss = (self.vae.decode(z) - pixel_values).pow(2).mean()
        return {"loss": loss, "latents": z.detach()}


def test_hf_trainer_state_of_a_lossless_vae_is_strict(tmp_path):
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    from ifid_callback.integrations.transformers import IFIDTrainer, IFIDTrainerCallback
    from tests.helpers import PixelValues

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=4,
        logging_steps=2,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    callback = IFIDTrainerCallback(
        eval_images=smooth_images(24, 3, SIZE, seed=5),
        feature=RandomFeatures(3 * SIZE * SIZE),
        bank_capacity=48,
    )
    trainer = IFIDTrainer(
        model=IdentityModel(),
        args=args,
        train_dataset=PixelValues(smooth_images(32, 3, SIZE, seed=3)),
        eval_dataset=PixelValues(smooth_images(8, 3, SIZE, seed=4)),
        callbacks=[callback],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is not a PreTrainedModel.*")
        trainer.train()
    # The Python side keeps the float: what best-model selection and the loggers see.
    assert callback.monitor.history[-1]["psnr"] == math.inf
    assert trainer.evaluate()["eval_psnr"] == math.inf
    trainer.save_state()

    for path in (tmp_path / "out" / "checkpoint-4", tmp_path / "out"):
        state = strict_loads((path / "trainer_state.json").read_text())
        evals = [h for h in state["log_history"] if "eval_ifid" in h]
        assert [h["step"] for h in evals][:2] == [2, 4]
        for entry in evals:
            assert entry["eval_psnr"] is None and entry["eval_psnr_lossless"] is True
            assert entry["eval_mse"] == 0.0 and math.isfinite(entry["eval_ifid"])
    assert len(evals) == 3  # the final trainer.evaluate() too
    # In memory too: a later save (or a resume's reload) holds the strict entries.
    assert all(
        e.get("eval_psnr", 0.0) is None for e in trainer.state.log_history if "eval_ifid" in e
    )
