"""The bank knows the step at which each row was inserted; the metric records its neighbours'."""

import numpy as np
import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.bank import UNKNOWN_STEP
from tests.helpers import RandomFeatures, decode, encode, run_ranks, smooth_images


def test_rows_keep_their_insertion_step_through_the_ring():
    bank = LatentBank(capacity=5)
    bank.add(torch.randn(3, 2), step=4)
    bank.add(torch.randn(1, 2))  # no step: unknown
    assert bank.steps.tolist() == [4, 4, 4, UNKNOWN_STEP]
    bank.add(torch.randn(3, 2), step=9)  # overwrites the oldest two rows
    assert sorted(bank.steps.tolist()) == [UNKNOWN_STEP, 4, 9, 9, 9]
    by_id = dict(zip(bank.ids.tolist(), bank.steps.tolist()))
    assert by_id == {2: 4, 3: UNKNOWN_STEP, 4: 9, 5: 9, 6: 9}
    per_row = LatentBank(capacity=4)
    per_row.add(torch.randn(3, 2), step=torch.tensor([1, 2, 3]))
    assert per_row.steps.tolist() == [1, 2, 3]


@pytest.mark.parametrize("step", [-2, 1.5, True, torch.tensor([1, 2])])
def test_a_bad_step_is_refused_and_the_bank_is_unchanged(step):
    bank = LatentBank(capacity=4)
    bank.add(torch.randn(3, 2), step=1)
    with pytest.raises((ValueError, TypeError), match="step"):
        bank.add(torch.randn(3, 2), step=step)
    assert len(bank) == 3 and bank.steps.tolist() == [1, 1, 1]


def test_state_dict_keeps_the_steps_and_old_states_load_as_unknown():
    bank = LatentBank(capacity=4)
    for step in range(1, 4):
        bank.add(torch.randn(2, 3), step=step)  # 6 rows into 4: steps 2, 2, 3, 3 remain
    state = bank.state_dict()
    assert state["steps"].tolist() == [2, 2, 3, 3]
    restored = LatentBank(capacity=4)
    restored.load_state_dict(state)
    assert restored.steps.tolist() == [2, 2, 3, 3]
    smaller = LatentBank()
    smaller.load_state_dict({**state, "capacity": 3})  # the newest rows survive
    assert smaller.steps.tolist() == [2, 3, 3]
    old = {key: value for key, value in state.items() if key != "steps"}
    legacy = LatentBank()
    legacy.load_state_dict(old)
    assert legacy.steps.tolist() == [UNKNOWN_STEP] * 4
    bad = {**state, "steps": torch.tensor([1, 2])}
    with pytest.raises(ValueError, match="steps"):
        LatentBank().load_state_dict(bad)


def _metric(bank, **kwargs):
    return InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(3 * 8 * 8), bank=bank, **kwargs
    )


def test_the_metric_records_the_insertion_steps_of_the_neighbours_it_picked():
    images = smooth_images(12, seed=3)
    bank = LatentBank(capacity=12)
    for i, chunk in enumerate(images.split(4)):
        bank.add(encode(chunk), step=10 * (i + 1))  # rows 0-3 at 10, 4-7 at 20, 8-11 at 30
    metric = _metric(bank)
    queries = images[[0, 5, 6, 9, 11]]  # each query's nearest row is its own latent
    metric.update(queries)
    metric.compute()
    assert metric.last_neighbor_steps.tolist() == [10, 20, 20, 30, 30]
    metric.reset()
    metric.update(queries[:2])
    metric.compute()
    assert metric.last_neighbor_steps.tolist() == [10, 20]  # only the last round's


def test_without_a_bank_there_are_no_neighbour_steps():
    metric = _metric(None)
    metric.update(smooth_images(6, seed=3))
    metric.compute()
    assert metric.last_neighbor_steps.numel() == 0


def _ranks(rank, world):
    images = smooth_images(16, seed=3)
    half = LatentBank(capacity=16)
    rows = torch.arange(16)[rank::world]
    half.add(encode(images[rows]), step=rows * 3)
    metric = _metric(half)
    metric.update(images[rows[::2]])
    metric.compute()
    return metric.last_neighbor_steps


def test_under_ddp_the_steps_come_from_the_rank_that_holds_the_row(tmp_path):
    for steps in run_ranks(_ranks, 2, tmp_path):
        expected = np.sort(np.concatenate([np.arange(16)[r::2][::2] * 3 for r in range(2)]))
        assert np.sort(steps.numpy()).tolist() == expected.tolist()
