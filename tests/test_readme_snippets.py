"""Every snippet of the README and of the documentation pages (docs/guide/) runs as written (its
marked stand-ins make it CPU-sized), and does what the text around it says; every `ifid` and
`ifid-probe` command line in them parses. A snippet that appears in several files runs once."""

from __future__ import annotations

import math
import re
import shlex
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs" / "guide").rglob("*.md"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _file_blocks(path: Path, language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(path.read_text()) if lang == language]


def _sourced_blocks(language: str) -> list[tuple[Path, str]]:
    """(file, code) of every fence in the README and the docs pages, each code once."""
    seen: set[str] = set()
    out = []
    for path in [README, *DOCS]:
        for code in _file_blocks(path, language):
            if code not in seen:
                seen.add(code)
                out.append((path, code))
    return out


def _blocks(language: str) -> list[str]:
    return [code for _, code in _sourced_blocks(language)]


SNIPPETS = _sourced_blocks("python")
PYTHON = [code for _, code in SNIPPETS]
NEEDS = {
    "lightning-ema": ("lightning", "tensorboard", "wandb"),
    "ema": ("ema_pytorch",),
    "lightning": ("lightning", "tensorboard"),
    "accelerate": ("accelerate", "tensorboard"),
    "transformers": ("transformers", "accelerate", "tensorboard"),
}


def _framework(code: str) -> str:
    if "ifid_vs_best" in code:
        return "early-stopping"
    if "EMAWeightAveraging" in code:
        return "lightning-ema"
    if "from ema_pytorch" in code:
        return "ema"
    for name in NEEDS:
        if f"ifid_callback.integrations.{name}" in code:
            return name
    if "IFIDMonitor(" in code:
        return "monitor"
    return "metric"


def _snippet_id(path: Path, code: str) -> str:
    return f"{path.relative_to(ROOT).with_suffix('')}:{_framework(code)}"


def test_the_readme_has_one_quick_start_per_framework():
    kinds = [_framework(code) for code in _file_blocks(README, "python")]
    assert sorted(kinds) == sorted(["metric", "lightning", "accelerate", "transformers"])


def test_the_docs_pages_have_every_kind_of_snippet():
    # The second "metric" snippet: one feature network shared by several metrics.
    kinds = [_framework(code) for path in DOCS for code in _file_blocks(path, "python")]
    assert sorted(kinds) == sorted(
        [
            "metric",
            "metric",
            "lightning",
            "accelerate",
            "transformers",
            "monitor",
            "lightning-ema",
            "ema",
            "early-stopping",
        ]
    )


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield tmp_path
    torch.set_num_threads(threads)
    from tests.test_examples import _reset_accelerate

    _reset_accelerate()


@pytest.mark.parametrize(
    "source, code", SNIPPETS, ids=[_snippet_id(path, code) for path, code in SNIPPETS]
)
def test_python_snippet_runs_as_written(source, code, in_tmp, monkeypatch):
    for module in NEEDS.get(_framework(code), ()):
        pytest.importorskip(module)
    monkeypatch.setenv("WANDB_MODE", "offline")  # restored after the test; the snippet sets it too
    monkeypatch.setenv("WANDB_SILENT", "true")
    namespace: dict = {"__name__": "__readme__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # framework chatter; our own warnings are checked below
        warnings.filterwarnings("error", ".*(IFIDCallback|IFIDTrainerCallback|accelerator.log).*")
        exec(compile(code, str(source), "exec"), namespace)  # noqa: S102

    kind = _framework(code)
    if kind == "metric":
        values = namespace["metric"].compute()
        assert math.isfinite(float(values["ifid"])) and math.isfinite(float(values["rfid"]))
    elif kind == "lightning-ema":
        import csv

        import wandb

        wandb.finish()
        wandb.teardown()
        history = namespace["ifid"].monitor.history
        assert [h["step"] for h in history] == [4, 8]
        (metrics,) = list(in_tmp.rglob("metrics.csv"))
        with open(metrics) as f:
            logged = [float(r["val/ifid"]) for r in csv.DictReader(f) if r.get("val/ifid")]
        assert logged == pytest.approx([h["ifid"] for h in history], rel=1e-6)
        assert list(in_tmp.rglob("events.out.tfevents.*"))
        assert list(in_tmp.rglob("run-*.wandb"))
    elif kind == "early-stopping":
        history = namespace["monitor"].history
        assert len(history) >= 3 and "ifid_vs_best" not in history[0]
        assert all(h["ifid_vs_best_std"] > 0 for h in history[1:])
        assert namespace["min_delta"] > 0
    elif kind == "monitor":
        history = namespace["monitor"].history
        assert [h["step"] for h in history] == [4, 8]
        assert all(h["bank_size"] > 0 and math.isfinite(h["ifid"]) for h in history)
        assert namespace["checkpoint"]["ifid"]
    elif kind == "ema":
        history = namespace["monitor"].history
        assert [h["step"] for h in history] == [4, 8]
        assert all(h["ifid"] != h["ifid_raw"] for h in history)
    elif kind == "lightning":
        history = namespace["ifid"].monitor.history
        assert [h["step"] for h in history] == [4, 8]
        assert Path(namespace["best"].best_model_path).is_file()
    elif kind == "accelerate":
        assert [h["step"] for h in namespace["monitor"].history] == [4, 8]
        assert list((in_tmp / "runs" / "vae").rglob("events.out.tfevents.*"))
    else:
        evals = [h for h in namespace["trainer"].state.log_history if "eval_ifid" in h]
        assert [h["step"] for h in evals] == [4, 8]
        assert namespace["trainer"].state.best_model_checkpoint is not None


def test_shell_commands_parse():
    from ifid_callback.cli import build_parser

    lines = [
        line.split("#")[0].strip()
        for code in _blocks("bash")
        for line in code.splitlines()
        if line.strip().startswith("ifid ")
    ]
    eval_lines = [line for line in lines if line.startswith("ifid eval")]
    assert eval_lines
    for line in eval_lines:
        build_parser().parse_args(shlex.split(line)[1:])  # exits (SystemExit) on a bad option


def test_probe_commands_parse():
    from ifid_callback.probes.cli import build_parser

    lines = [
        line.split("#")[0].split("ifid-probe", 1)[1].strip()
        for code in _blocks("bash")
        for line in code.splitlines()
        if "ifid-probe " in line.split("#")[0]
    ]
    assert lines
    for line in lines:
        build_parser().parse_args(shlex.split(line))  # exits (SystemExit) on a bad option
