"""Automatic bank ids stay unique across ranks and across resumes on any world size."""

import pytest
import torch

import ifid_callback.bank as bank_module
from ifid_callback import LatentBank


@pytest.fixture
def as_rank(monkeypatch):
    """Make the bank believe it runs as ``rank`` of ``world`` processes."""

    def set_rank(world: int, rank: int) -> None:
        monkeypatch.setattr(bank_module, "world_and_rank", lambda: (world, rank))

    return set_rank


def fill(bank: LatentBank, adds: int, batch: int = 4) -> None:
    for _ in range(adds):
        bank.add(torch.randn(batch, 3))


def all_unique(*id_sets: torch.Tensor) -> bool:
    ids = torch.cat(id_sets)
    return len(set(ids.tolist())) == len(ids)


def test_two_ranks_resumed_in_one_process_keep_ids_unique(as_rank):
    banks = []
    for rank in range(2):
        as_rank(2, rank)
        bank = LatentBank(capacity=100)
        fill(bank, adds=5 if rank == 0 else 3)  # ranks need not add equally often
        banks.append(bank)
    assert all_unique(banks[0].ids, banks[1].ids)
    # Resume in one process with the rows of both ranks (rank 0's state plus rank 1's rows).
    as_rank(1, 0)
    resumed = LatentBank(capacity=100)
    resumed.load_state_dict(banks[0].state_dict())
    resumed.add(banks[1].vectors, ids=banks[1].ids)
    new = resumed.add(torch.randn(20, 3))
    assert all_unique(resumed.ids)
    assert not set(new.tolist()) & set(banks[0].ids.tolist() + banks[1].ids.tolist())


@pytest.mark.parametrize("old_world,new_world", [(2, 1), (1, 2), (2, 3), (3, 2)])
def test_resume_on_another_world_size(as_rank, old_world, new_world):
    old = []
    for rank in range(old_world):
        as_rank(old_world, rank)
        bank = LatentBank(capacity=100)
        fill(bank, adds=2 + rank)
        old.append(bank)
    every_old_id = torch.cat([b.ids for b in old])
    state = old[0].state_dict()  # frameworks restore rank 0's checkpoint on every rank
    added = []
    for rank in range(new_world):
        as_rank(new_world, rank)
        bank = LatentBank(capacity=100)
        bank.load_state_dict(state)
        added.append(bank.add(torch.randn(6, 3)))
        added.append(bank.add(torch.randn(2, 3)))
    assert all_unique(*added)  # no two ranks issue the same id
    # New ids never repeat an id of the restored rows.
    assert not set(torch.cat(added).tolist()) & set(state["ids"].tolist())
    # Nor one issued by the same rank before the resume (rank 0 continues its own sequence).
    assert not set(torch.cat(added[:2]).tolist()) & set(old[0].ids.tolist())
    assert len(every_old_id) == len(set(every_old_id.tolist()))


def test_automatic_ids_avoid_ids_given_before(as_rank):
    as_rank(1, 0)
    bank = LatentBank(capacity=100)
    bank.add(torch.randn(5, 3), ids=torch.arange(5))
    auto = bank.add(torch.randn(5, 3))
    assert all_unique(bank.ids) and auto.min() >= 5


def test_ids_are_never_reissued_after_rows_roll_out_or_clear(as_rank):
    as_rank(1, 0)
    bank = LatentBank(capacity=4)
    issued = [bank.add(torch.randn(3, 2)) for _ in range(3)]
    bank.clear()
    issued.append(bank.add(torch.randn(3, 2)))
    assert all_unique(*issued)


def test_old_checkpoints_without_a_safe_counter_still_resume_unique(as_rank):
    as_rank(1, 0)
    bank = LatentBank(capacity=100)
    fill(bank, adds=2)
    state = bank.state_dict()
    state["next_id"] = 0  # a counter that does not cover the saved ids
    resumed = LatentBank(capacity=100)
    resumed.load_state_dict(state)
    new = resumed.add(torch.randn(4, 3))
    assert all_unique(resumed.ids) and not set(new.tolist()) & set(state["ids"].tolist())
