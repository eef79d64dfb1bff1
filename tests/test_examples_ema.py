"""The examples' ``--ema`` runs: iFID of the averaged weights and of the raw ones, both logged."""

from __future__ import annotations

import pytest

from tests.test_examples import run_example, tensorboard_scalars


def _rows(out: str) -> list[tuple[float, float]]:
    """(raw iFID, iFID) of each printed evaluation row."""
    rows = []
    for line in out.splitlines():
        if line.startswith("step"):
            words = line.split()
            rows.append((float(words[words.index("raw") + 2]), float(words[-1])))
    return rows


@pytest.mark.parametrize("name", ["lightning_demo.py", "accelerate_loop.py"])
def test_examples_log_ema_and_raw_weights(name, tmp_path, monkeypatch, capsys):
    argv = ["--smoke", "--ema", "0.5", "--out", str(tmp_path)]
    assert run_example(name, argv, monkeypatch) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 2
    assert all(raw != pytest.approx(ema, rel=1e-4) for raw, ema in rows)  # other weights
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["val/ifid"] == pytest.approx([ema for _, ema in rows], abs=0.01)
    assert scalars["val/ifid_raw"] == pytest.approx([raw for raw, _ in rows], abs=0.01)
