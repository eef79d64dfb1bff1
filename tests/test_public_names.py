"""A public name means one thing, whatever was imported before it (lazy exports vs submodules)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ifid_callback
import ifid_callback.probes

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ifid_callback, ifid_callback.probes]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_no_lazy_export_is_shadowed_by_a_submodule(package):
    # Importing a submodule binds its name on the package, replacing a lazy export of that name.
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert not submodules & set(package._EXPORTS), sorted(submodules & set(package._EXPORTS))


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    "before",
    ["", "import ifid_callback.probes.report", "from ifid_callback.probes import write_report"],
    ids=["fresh", "after-report-module", "after-another-export"],
)
def test_probes_correlation_is_the_function_in_any_import_order(before):
    code = (
        f"{before}\n"
        "from ifid_callback.probes import correlation\n"
        "import ifid_callback.probes as p\n"
        "print(callable(correlation) and not hasattr(correlation, '__path__'),"
        " correlation is p.correlation, type(correlation).__name__)\n"
    )
    assert _run(code) == "True True function"


def test_every_probe_export_resolves_to_its_definition_after_all_imports():
    probes = ifid_callback.probes
    for info in pkgutil.iter_modules(probes.__path__):
        importlib.import_module(f"{probes.__name__}.{info.name}")
    for name, module in probes._EXPORTS.items():
        source = importlib.import_module(f"{probes.__name__}.{module}")
        assert getattr(probes, name) is getattr(source, name), name
