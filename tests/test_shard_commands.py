"""The commands split over shards: ``ifid-probe run`` under ``torchrun --nproc_per_node 2``,
``ifid-probe study --shard`` and ``ifid-probe pair-check --shard``, each against the same command
run in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifid_callback.probes import cli
from ifid_callback.probes.zoo import ZooMember, train_zoo
from tests.helpers import RandomFeatures
from tests.test_shard import _files, _shards_that_worked

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def study_features() -> RandomFeatures:
    """The feature network of the ``run`` test, by name (``--feature``)."""
    return RandomFeatures(in_dim=3 * 32 * 32, num_features=16)


def _run_args(zoo: list[Path], out: Path) -> list[str]:
    vaes = [a for p in zoo for a in ("--vae", str(p))]
    overrides = json.dumps({"depth": 1, "hidden_size": 32, "num_heads": 2})
    return [
        "run", *vaes, "--out", str(out), "--max-train", "96", "--num-eval", "48",
        "--num-reference", "64", "--num-samples", "32", "--t-grid", "0.5",
        "--feature", "tests.test_shard_commands:study_features", "--probe-steps", "6",
        "--probe-batch-size", "16", "--probe-ema", "0.9", "--probe-overrides", overrides,
        "--sampling-steps", "3", "--batch-size", "32", "--sample-batch-size", "16",
        "--probe-seeds", "2", "--no-progress",
    ]  # fmt: skip


def test_run_under_torchrun_equals_one_process(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    members = [ZooMember("ae", 4), ZooMember("kl", 2, kl_weight=1e-2, latent_noise=0.1)]
    zoo = train_zoo(tmp_path / "zoo", images, members, steps=3, batch_size=16, base_channels=8,
                    progress=False)  # fmt: skip
    assert cli.main(_run_args(zoo, tmp_path / "single")) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ranks = tmp_path / "ranks"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*launcher, "--nproc_per_node", "2", "-m", "ifid_callback.probes.cli",
         *_run_args(zoo, ranks)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # One rank prints the report; the other says that its jobs are done.
    assert "its jobs are done; the shard that finishes last writes the report" in done.stdout
    assert "gFID" in done.stdout
    assert _files(ranks) == _files(tmp_path / "single")
    assert _shards_that_worked(ranks) == {"0/2", "1/2"}


@pytest.fixture(scope="module")
def quick_feature():
    """A digit classifier trained for one epoch: a valid feature network in a second."""
    from ifid_callback.probes.digit_features import DigitFeatures, DigitRecipe, train_digit_net

    net, info = train_digit_net(DigitRecipe(epochs=1))
    return DigitFeatures(net, {**info, "key": "quick"})


def _mtimes(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in sorted(folder.iterdir())}


def test_digits_study_shards_equal_one_process(tmp_path, monkeypatch, quick_feature, capsys):
    from ifid_callback.probes import digit_features

    monkeypatch.setattr(digit_features, "digit_features", lambda: quick_feature)
    args = ["study", "--dataset", "digits", "--smoke", "--families", "C", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "single")]) == 0
    expected = _files(tmp_path / "single", skip=("zoo/",))
    capsys.readouterr()

    out = tmp_path / "shards"
    assert cli.main([*args, "--out", str(out), "--shard", "0/2"]) == 0
    assert "shard 0/2: its jobs are done" in capsys.readouterr().out
    assert not (out / "report").exists()
    assert cli.main([*args, "--out", str(out), "--shard", "1/2"]) == 0
    assert "Group C" in capsys.readouterr().out
    assert _files(out, skip=("zoo/",)) == expected
    assert (out / "zoo" / "zoo.json").read_bytes().replace(str(out).encode(), b"") == (
        tmp_path / "single" / "zoo" / "zoo.json"
    ).read_bytes().replace(str(tmp_path / "single").encode(), b"")
    assert _shards_that_worked(out) == {"0/2", "1/2"}
    # The VAEs were trained by the shards (train/<name> jobs), once each.
    done = {p.name for p in (out / "jobs").rglob("train%2F*.done")}
    assert len(done) == 4

    # A finished shard run again trains nothing and computes no stage.
    events, zoo = (out / "events.jsonl").read_text(), _mtimes(out / "zoo")
    zoo.pop("zoo.json")
    assert cli.main([*args, "--out", str(out), "--shard", "1/2"]) == 0
    assert (out / "events.jsonl").read_text() == events
    assert {k: v for k, v in _mtimes(out / "zoo").items() if k != "zoo.json"} == zoo


def _without_seconds(data):
    if isinstance(data, dict):
        return {k: _without_seconds(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [_without_seconds(v) for v in data]
    return data


def test_pair_check_shards_equal_one_process(tmp_path, monkeypatch, quick_feature, capsys):
    from ifid_callback.probes import pair

    monkeypatch.setattr(pair, "_default_feature", lambda feature: quick_feature)
    args = ["pair-check", "--smoke", "--seeds", "3", "4", "--pairs", "control"]
    one = tmp_path / "one"
    assert cli.main([*args, "--workers", "1", "--out", str(one)]) == 0
    out = tmp_path / "shards"
    assert cli.main([*args, "--out", str(out), "--shard", "1/2"]) == 0
    assert "shard 1/2: its jobs are done" in capsys.readouterr().out
    assert not (out / "results.json").exists()
    assert cli.main([*args, "--out", str(out), "--shard", "0/2"]) == 0
    assert "### `control`" in capsys.readouterr().out
    got, expected = (json.loads((d / "results.json").read_text()) for d in (out, one))
    assert _without_seconds(got) == _without_seconds(expected)
    assert (out / "results.md").read_text() == (one / "results.md").read_text()
    assert _shards_that_worked(out) == {"0/2", "1/2"}
