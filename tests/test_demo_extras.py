"""The demo's table shows iFID +- its standard error and PSNR, and recommends a min_delta."""

from __future__ import annotations

import math

import pytest

from ifid_callback.demo import format_table, min_delta_advice
from ifid_callback.functional import recommend_min_delta

ROWS = [
    {
        "step": 10,
        "loss": 0.5,
        "val_loss": 0.4,
        "rfid": 200.0,
        "ifid": 210.0,
        "ifid_std": 3.25,
        "psnr": 21.5,
        "eval_seconds": 3,
    },
    {
        "step": 20,
        "loss": 0.3,
        "val_loss": 0.2,
        "rfid": 150.0,
        "ifid": 160.5,
        "ifid_std": 2.5,
        "psnr": 23.25,
        "eval_seconds": 3,
    },
]


def test_table_shows_the_standard_error_and_psnr():
    table = format_table(ROWS, best_step=20).splitlines()
    assert "iFID +- SE" in table[0] and "PSNR dB" in table[0]
    assert "210.00 +- 3.25" in table[2] and "21.50" in table[2]
    assert "160.50 +- 2.50" in table[3] and "23.25" in table[3]
    # Rows without the extras still print (as nan), never crash.
    bare = [{k: v for k, v in ROWS[0].items() if k not in ("ifid_std", "psnr")}]
    assert "210.00 +- nan" in format_table(bare)


def test_min_delta_advice_is_the_recommendation_of_the_rows():
    delta = recommend_min_delta([(210.0, 3.25), (160.5, 2.5)])
    assert delta == pytest.approx(2 * math.sqrt(2) * 2.875)
    advice = min_delta_advice(ROWS)
    assert f"min_delta={delta:.2f}" in advice and "val/ifid" in advice
    assert min_delta_advice([{**ROWS[0], "ifid_std": math.nan}]) is None
