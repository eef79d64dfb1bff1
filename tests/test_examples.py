"""Smoke runs of every script in examples/ (tiny, stand-in features), as a user would start them."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

from tests.test_cli import save_patches, save_tiny_autoencoder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ("lightning_demo.py", "accelerate_loop.py", "hf_trainer.py", "evaluate_diffusers_vae.py")
NEEDS = {
    "lightning_demo.py": ("lightning", "tensorboard"),
    "accelerate_loop.py": ("accelerate", "tensorboard"),
    "hf_trainer.py": ("transformers", "accelerate", "tensorboard"),
    "evaluate_diffusers_vae.py": ("diffusers",),
}


def run_example(name: str, argv: list[str], monkeypatch) -> int:
    """Run examples/<name> as ``__main__`` with ``argv``, in this process (imports are shared)."""
    for module in NEEDS[name]:
        pytest.importorskip(module)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *argv])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    except SystemExit as exc:
        return 0 if exc.code is None else int(exc.code)
    finally:
        torch.set_num_threads(threads)
        _reset_accelerate()
    return 0


def _reset_accelerate() -> None:
    # Accelerate keeps process-wide state between Accelerator objects; each example starts clean.
    try:
        from accelerate.state import AcceleratorState, GradientState, PartialState
    except ImportError:
        return
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    PartialState._reset_state()


def tensorboard_scalars(log_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return values


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name, monkeypatch, capsys):
    assert run_example(name, ["--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    assert "--smoke" in out


def test_lightning_example(tmp_path, monkeypatch, capsys):
    assert run_example("lightning_demo.py", ["--smoke", "--out", str(tmp_path)], monkeypatch) == 0
    out = capsys.readouterr().out
    ifids = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("step")]
    assert len(ifids) == 2
    best = [line for line in out.splitlines() if line.startswith("best checkpoint")]
    assert best and f"{min(ifids):.2f}" in best[0] and Path(best[0].split(": ", 1)[1]).is_file()
    scalars = tensorboard_scalars(tmp_path)
    assert len(scalars["val/ifid"]) == 2 and len(scalars["val/rfid"]) == 2


def test_accelerate_example(tmp_path, monkeypatch, capsys):
    assert run_example("accelerate_loop.py", ["--smoke", "--out", str(tmp_path)], monkeypatch) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("step")] == ["4", "8"]
    scalars = tensorboard_scalars(tmp_path)
    assert len(scalars["val/ifid"]) == 2 and len(scalars["val/rfid"]) == 2
    # save_state wrote the monitor (registered for checkpointing) next to the model.
    assert list((tmp_path / "state").glob("custom_checkpoint_*"))


def test_hf_trainer_example(tmp_path, monkeypatch, capsys):
    assert run_example("hf_trainer.py", ["--smoke", "--out", str(tmp_path)], monkeypatch) == 0
    out = capsys.readouterr().out
    rows = {
        int(line.split()[1]): float(line.split()[-1])
        for line in out.splitlines()
        if line.startswith("step")
    }
    assert sorted(rows) == [4, 8]
    best_step = min(rows, key=rows.get)
    assert f"checkpoint-{best_step}" in out
    scalars = tensorboard_scalars(tmp_path)
    assert len(scalars["eval/ifid"]) == 2


def test_evaluate_diffusers_example_loads_a_saved_autoencoder(tmp_path, monkeypatch, capsys):
    vae_dir = save_tiny_autoencoder(tmp_path / "vae")
    images = save_patches(tmp_path / "images", 10)
    out_json = tmp_path / "result.json"
    argv = [
        "--vae",
        str(vae_dir),
        "--images",
        str(images),
        "--smoke",
        "--json",
        str(out_json),
        "--device",
        "cpu",
    ]
    assert run_example("evaluate_diffusers_vae.py", argv, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "loaded AutoencoderKL" in out and "not FID" in out
    import json

    result = json.loads(out_json.read_text())
    assert result["num_images"] == 10 and result["ifid"] > 0 and result["rfid"] > 0
