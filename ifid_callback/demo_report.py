"""What the demo prints after its monitored training run: the table of evaluations and advice."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["format_table", "min_delta_advice", "print_summary"]


def format_table(rows: Sequence[dict[str, float]], best_step: int | None = None) -> str:
    """The demo's results as a fixed-width text table, one row per evaluation.

    Args:
        rows: dicts with ``step``, ``loss`` (mean training loss since the previous row),
            ``val_loss``, ``rfid``, ``ifid`` and optionally ``ifid_std`` (its standard error,
            shown as +-), ``psnr`` (dB) and ``eval_seconds`` (wall time of the validation,
            Inception included).
        best_step: the row to mark as the best checkpoint.
    """
    lines = [
        f"{'step':>6}  {'train loss':>10}  {'val loss':>9}  {'rFID':>8}  {'iFID +- SE':>15}  "
        f"{'PSNR dB':>7}  {'eval s':>6}",
        f"{'-' * 6}  {'-' * 10}  {'-' * 9}  {'-' * 8}  {'-' * 15}  {'-' * 7}  {'-' * 6}",
    ]
    for row in rows:
        mark = "  <- best val/ifid" if best_step is not None and row["step"] == best_step else ""
        ifid = f"{row['ifid']:.2f} +- {row.get('ifid_std', math.nan):.2f}"
        lines.append(
            f"{int(row['step']):>6}  {row['loss']:>10.4f}  {row['val_loss']:>9.4f}  "
            f"{row['rfid']:>8.2f}  {ifid:>15}  {row.get('psnr', math.nan):>7.2f}  "
            f"{row.get('eval_seconds', math.nan):>6.0f}{mark}"
        )
    return "\n".join(lines)


def min_delta_advice(rows: Sequence[dict[str, float]]) -> str | None:
    """A line recommending an early-stopping ``min_delta`` for val/ifid from the rows' standard
    errors (:func:`~ifid_callback.functional.recommend_min_delta`), or None without them."""
    from ifid_callback.functional import recommend_min_delta

    pairs = [
        (row["ifid"], row["ifid_std"])
        for row in rows
        if math.isfinite(row.get("ifid", math.nan)) and math.isfinite(row.get("ifid_std", math.nan))
    ]
    if not pairs:
        return None
    delta = recommend_min_delta(pairs)
    return (
        f"iFID differences below {delta:.2f} are within the sampling noise of these evaluations "
        f"(2 sqrt(2) x the median SE): early-stop with EarlyStopping(monitor='val/ifid', "
        f"mode='min', min_delta={delta:.2f})."
    )


def print_summary(
    args: argparse.Namespace,
    eval_count: int,
    rows: Sequence[dict[str, float]],
    best_score: float | None,
    best_path: str,
    log_dir: str,
    grid_path: Path | None,
    minutes: float,
) -> None:
    """Print part 1's results: what was measured, the table, advice, and where the outputs are.

    Args:
        args: the demo's parsed options.
        eval_count: held-out images per evaluation.
        rows: one dict per evaluation (see :func:`format_table`).
        best_score: the lowest val/ifid the checkpoint callback kept, or None.
        best_path: the best checkpoint's file ("" when none was saved).
        log_dir: the TensorBoard run folder.
        grid_path: the saved interpolation grid, or None.
        minutes: wall time of the part.
    """
    best_step = None
    if best_score is not None and rows:
        best_step = min(rows, key=lambda r: abs(r["ifid"] - best_score))["step"]
    print()
    print(
        f"iFID and rFID on {eval_count} held-out images ({args.feature} features); "
        f"neighbours from a rolling bank of up to {args.bank_size} training latents; "
        f"{args.interpolation}, alpha={args.alpha}."
    )
    if args.feature == "inception" and eval_count < 2048:
        print(
            f"FID from {eval_count} images (fewer than the 2048 feature dimensions) is biased "
            "upwards: compare the rows with each other, not with published FIDs."
        )
    print(format_table(rows, best_step))
    advice = min_delta_advice(rows)
    if advice is not None:
        print(advice)
    print()
    if best_path:
        print(f"best checkpoint (lowest val/ifid = {best_score:.2f}): {best_path}")
    print(f"TensorBoard logs: {log_dir}   (view: tensorboard --logdir {args.out})")
    if grid_path is not None:
        print(f"interpolation grid (x | NN(x) | interpolant | reconstruction): {grid_path}")
    print(f"{'part 1 took' if args.part == 'all' else 'total time:'} {minutes:.1f} min")
