import pytest
import torch

from ifid_callback.bank import LatentBank


def test_add_flattens_and_numbers_rows():
    bank = LatentBank(capacity=10)
    ids = bank.add(torch.randn(3, 2, 2, 2))
    assert len(bank) == 3 and bank.dim == 8 and bank.latent_shape == (2, 2, 2)
    assert torch.equal(ids, torch.arange(3))
    assert bank.vectors.shape == (3, 8)
    assert torch.equal(bank.latents(), bank.vectors.reshape(3, 2, 2, 2))


def test_fifo_keeps_newest_capacity_rows():
    bank = LatentBank(capacity=5)
    data = torch.arange(8 * 2, dtype=torch.float32).reshape(8, 2)
    for i in range(0, 8, 3):
        bank.add(data[i : i + 3])
    assert len(bank) == 5
    kept = sorted(bank.ids.tolist())
    assert kept == [3, 4, 5, 6, 7]
    for row, i in zip(bank.vectors, bank.ids):
        assert torch.equal(row, data[i])


def test_batch_larger_than_capacity_keeps_its_tail():
    bank = LatentBank(capacity=3)
    data = torch.randn(7, 4)
    bank.add(data, ids=torch.arange(100, 107))
    assert sorted(bank.ids.tolist()) == [104, 105, 106]


@pytest.mark.parametrize(
    "dtype,torch_dtype",
    [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)],
)
def test_storage_dtype(dtype, torch_dtype):
    bank = LatentBank(capacity=4, dtype=dtype)
    x = torch.randn(2, 3)
    bank.add(x)
    assert bank.vectors.dtype == torch_dtype
    torch.testing.assert_close(bank.vectors.float(), x, atol=1e-2, rtol=1e-2)
    assert bank.memory_bytes() == 4 * 3 * torch.tensor([], dtype=torch_dtype).element_size() + 4 * 8


def test_state_dict_round_trip_preserves_rows_ids_and_counter():
    bank = LatentBank(capacity=4)
    for _ in range(3):
        bank.add(torch.randn(3, 2, 3))
    state = bank.state_dict()
    restored = LatentBank(capacity=1)
    restored.load_state_dict(state)
    assert restored.capacity == 4 and len(restored) == 4
    assert torch.equal(restored.vectors, state["vectors"]) and torch.equal(
        restored.ids, state["ids"]
    )
    # Insertion order is kept: the next add overwrites the same (oldest) row in both banks.
    a = torch.randn(1, 2, 3)
    bank.add(a)
    restored.add(a)
    assert sorted(bank.ids.tolist()) == sorted(restored.ids.tolist())
    assert bank.state_dict()["ids"].tolist() == restored.state_dict()["ids"].tolist()


def test_bad_input_leaves_bank_unchanged():
    bank = LatentBank(capacity=4)
    bank.add(torch.randn(2, 3))
    before = bank.state_dict()
    bad = torch.randn(2, 3)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bank.add(bad)
    with pytest.raises(ValueError, match="per-sample shape"):
        bank.add(torch.randn(2, 4))
    with pytest.raises(ValueError, match="ids"):
        bank.add(torch.randn(2, 3), ids=torch.arange(3))
    with pytest.raises(TypeError, match="floating"):
        bank.add(torch.ones(2, 3, dtype=torch.long))
    after = bank.state_dict()
    assert torch.equal(before["vectors"], after["vectors"]) and torch.equal(
        before["ids"], after["ids"]
    )
    assert before["next_id"] == after["next_id"]


def test_constructor_validation():
    with pytest.raises(ValueError, match="capacity"):
        LatentBank(capacity=0)
    with pytest.raises(ValueError, match="dtype"):
        LatentBank(dtype="int8")


def test_gather_without_process_group_returns_own_rows():
    bank = LatentBank(capacity=4)
    bank.add(torch.randn(3, 2))
    v, i = bank.gather()
    assert torch.equal(v, bank.vectors) and torch.equal(i, bank.ids)
