"""Part 2 of ``ifid demo``: two VAEs that rFID and iFID rank oppositely, and a probe that settles it.

Two VAEs of the digits zoo (:mod:`ifid_callback.probes.pair`) are trained on the digits embedded
in scikit-learn, each with a small SiT diffusion probe on its latents. The demo prints their
rFID and iFID (with standard errors), the probe's gFID, which VAE each metric prefers, and the
spread of every figure over the five seeds of the committed check
(``docs/results/digits/pair/``), whose summary ships with the package
(``demo_pair_check.json``). The pair shown is the one that check selected.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["committed_check", "run_demo_pair"]


def committed_check() -> dict[str, Any]:
    """The committed check's summary (:func:`~ifid_callback.probes.pair.demo_summary`)."""
    text = resources.files("ifid_callback").joinpath("demo_pair_check.json").read_text()
    return json.loads(text)


def run_demo_pair(
    seed: int = 0, out: str | Path = "runs/demo/pair", workers: int = 2, smoke: bool = False
) -> int:
    """Train the committed check's pair at ``seed``, print the table and the verdict; returns 0.

    Args:
        seed: seeds everything random (the check used 0-4; 0 is the demo's default).
        out: where the VAEs and results are cached (a second run with the same seed reuses them).
        workers: processes; with 2 the two VAEs and their probes train side by side.
        smoke: tiny budgets (tests): the pipeline runs, its numbers mean nothing.
    """
    from ifid_callback.probes.digit_features import digit_features
    from ifid_callback.probes.digits_study import DigitsStudySettings
    from ifid_callback.probes.pair import (
        CANDIDATES,
        CONTROL,
        DESCRIPTIONS,
        PAIRS,
        format_pair,
        outcome_sentence,
        run_pair,
    )

    started = time.perf_counter()
    check = committed_check()
    pair = check["shown"]
    settings = DigitsStudySettings.smoke(str(out)) if smoke else DigitsStudySettings(str(out))
    control = pair == CONTROL
    print("Data: scikit-learn's 1797 handwritten 8x8 digits (1400 train, 397 held out).")
    print("Two VAEs with the same 4x4x4 latents:")
    for name in PAIRS[pair]:
        print(f"  {name}: {DESCRIPTIONS[name]}")
    if control:
        print(
            "No natural pair held across the committed check's seeds, so this is the positive "
            "control: rFID is equal by construction."
        )
    print(
        f"Each gets a SiT diffusion probe ({settings.probe_steps} steps) on its training latents; "
        f"gFID of {settings.num_samples} samples against the training digits."
    )
    print(
        "FIDs are measured in a small digit classifier's 64-d features (trained at first use, "
        "then cached), not Inception: compare them with each other only."
    )
    if smoke:
        print("--pair-smoke: tiny budgets, the numbers below mean nothing.")
    print(f"Training in {workers} process(es); about 2 minutes on 2 idle cores ...", flush=True)

    result = run_pair(pair, seed, settings, feature=digit_features(), workers=workers)
    summary = check["summary"]
    print()
    print(f"seed {seed}:")
    print(format_pair(result, spread=None if smoke else summary))
    seeds = ", ".join(map(str, check["seeds"]))
    print(
        f"The committed check (docs/results/digits/pair/) ran seeds {seeds}, re-seeding everything "
        "random each time. A natural pair is shown only if, in every seed, rFID and iFID disagree "
        "and the probe sides with iFID:"
    )
    for name in (*CANDIDATES, CONTROL):
        label = " vs ".join(PAIRS[name]) + (" (positive control)" if name == CONTROL else "")
        print(f"  {label}: {outcome_sentence(check['counts'][name])}")
    if not smoke and seed not in check["seeds"]:
        print(f"Seed {seed} is not one of the check's seeds: this run is new evidence.")
    if any("align" in name for name in PAIRS[pair]):
        print(
            "Caveat: the alignment's target is the same digit classifier that measures every FID "
            "here."
        )
    print(f"results cached in {out}; part 2 took {(time.perf_counter() - started) / 60:.1f} min")
    return 0
