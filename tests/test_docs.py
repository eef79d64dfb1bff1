"""The documentation site builds with ``mkdocs build --strict`` (as ``make docs`` does): a broken
link, a missing anchor or an API reference to a name that does not exist fails the build, and so
this test; the README's relative links are checked too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("material")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    run = _build(ROOT / "mkdocs.yml", site)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (site / "guide" / "index.html").is_file()
    # The API reference is rendered from the docstrings, not left as a `:::` line.
    api = (site / "guide" / "api" / "metric" / "index.html").read_text()
    assert "InterpolatedFID" in api and "compute_rfid" in api and ":::" not in api


@pytest.mark.parametrize(
    "page, expected",
    [
        ("See [the missing page](missing.md).", "missing.md"),
        ("See [a heading](#no-such-heading).", "no-such-heading"),
        ("::: ifid_callback.metric.NoSuchName", "NoSuchName"),
    ],
    ids=["link", "anchor", "reference"],
)
def test_a_broken_link_or_reference_fails_the_build(tmp_path, page, expected):
    # The site's own settings, on a one-page copy: what would break the real build breaks this.
    text = (ROOT / "mkdocs.yml").read_text()
    head = text.split("\nnav:")[0].replace("docs_dir: docs", "docs_dir: pages")
    head = head.replace("paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "index.md").write_text(f"# A page\n\n{page}\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(head + "\nnav:\n  - Home: index.md\n")
    run = _build(config, tmp_path / "site")
    assert run.returncode != 0
    assert expected in run.stdout + run.stderr


def test_the_readme_links_resolve():
    # The README is read on the forge, not built by mkdocs: its relative links are checked here.
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing
