"""Per-channel standardisation (bn_channel) and the top-k softmax(-MSE) weights, vs direct code."""

import numpy as np
import pytest
import torch

from ifid_callback.functional.channel_norm import (
    ChannelStatistics,
    candidate_mse,
    channel_statistics,
    standardize,
    topk_weights,
)
from ifid_callback.functional.neighbors import pick_neighbor


def _latents(seed=0, b=37, c=4, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.5, 3.0, 10.0, 1.0])[:c]
    shift = torch.tensor([2.0, -1.0, 50.0, 0.0])[:c]
    return (
        torch.randn(b, c, h, w, generator=g) * scale[None, :, None, None]
        + shift[None, :, None, None]
    )


def _direct_stats(z: np.ndarray, eps: float):
    # Channel by channel, over every sample and position.
    mean = np.array([z[:, ch].mean() for ch in range(z.shape[1])])
    std = np.array([np.sqrt(z[:, ch].var() + eps) for ch in range(z.shape[1])])
    return mean, std


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_statistics_match_direct_per_channel_computation(eps, monkeypatch):
    z = _latents()
    mean, std = _direct_stats(z.double().numpy(), eps)
    stats = channel_statistics(z, eps=eps)
    np.testing.assert_allclose(stats.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(stats.std.numpy(), std, rtol=1e-12)
    # Flattened rows (as the bank keeps them) with channels given give the same numbers, also
    # when accumulated over many small blocks.
    monkeypatch.setattr("ifid_callback.functional.channel_norm._STAT_BLOCK_ELEMENTS", 100)
    rows = channel_statistics(z.reshape(z.shape[0], -1), channels=4, eps=eps)
    np.testing.assert_allclose(rows.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(rows.std.numpy(), std, rtol=1e-12)


def test_standardize_matches_direct_and_keeps_shape_dtype():
    z = _latents(1)
    stats = channel_statistics(z)
    zn = z.double().numpy()
    expected = np.empty_like(zn)
    for ch in range(zn.shape[1]):
        expected[:, ch] = (zn[:, ch] - stats.mean[ch].item()) / stats.std[ch].item()
    out = standardize(z, stats)
    assert out.shape == z.shape and out.dtype == z.dtype
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-5, atol=1e-5)
    rows = standardize(z.reshape(z.shape[0], -1), stats)
    assert torch.equal(rows, out.reshape(z.shape[0], -1))
    # The standardised bank has mean 0 and unit (population) variance per channel.
    again = channel_statistics(out.double(), eps=0.0)
    np.testing.assert_allclose(again.mean.numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(again.std.numpy(), 1.0, rtol=1e-4)


def _direct_weights(queries, candidates, mean=None, std=None, channels=4):
    q = queries.double().numpy()
    c = candidates.double().numpy()
    qn, kn, d = c.shape
    s = d // channels
    probs = np.empty((qn, kn))
    for i in range(qn):
        mse = np.empty(kn)
        for j in range(kn):
            total = 0.0
            for e in range(d):
                a, b = q[i, e], c[i, j, e]
                if mean is not None:
                    ch = e // s  # channel-major flattening
                    a, b = (a - mean[ch]) / std[ch], (b - mean[ch]) / std[ch]
                total += (a - b) ** 2
            mse[j] = total / d
        w = np.exp(-(mse - mse.min()))
        probs[i] = w / w.sum()
    return probs


@pytest.mark.parametrize("standardised", [False, True])
def test_topk_weights_equal_softmax_of_minus_mse_by_direct_loops(standardised):
    bank = _latents(2, b=50, c=4, h=2, w=3)
    stats = channel_statistics(bank) if standardised else None
    flat = bank.reshape(50, -1)
    g = torch.Generator().manual_seed(3)
    queries = flat[:6] + 0.3 * torch.randn(6, flat.shape[1], generator=g)
    candidates = flat[torch.randint(0, 50, (6, 5), generator=g)]
    expected = _direct_weights(
        queries,
        candidates,
        None if stats is None else stats.mean.numpy(),
        None if stats is None else stats.std.numpy(),
    )
    got = topk_weights(queries, candidates, stats)
    assert got.shape == (6, 5) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(got.sum(1).numpy(), 1.0, rtol=1e-12)


def test_standardisation_changes_which_candidate_is_favoured():
    # Channel 1 has a 100x larger scale: on raw latents its differences dominate the MSE; after
    # standardisation both channels count alike.
    stats = ChannelStatistics(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 100.0]))
    query = torch.tensor([[0.0, 0.0]])
    candidates = torch.tensor([[[1.0, 0.0], [0.0, 10.0]]])  # channel-0 vs channel-1 difference
    raw = candidate_mse(query, candidates)
    std = candidate_mse(query, candidates, stats)
    assert raw.tolist() == [[0.5, 50.0]]
    assert std[0].tolist() == pytest.approx([0.5, 0.005])


def test_mse_feeds_pick_neighbor_with_the_same_probabilities():
    # pick_neighbor("softmax") draws with softmax(-distances): fed the MSE it follows topk_weights.
    g = torch.Generator().manual_seed(0)
    queries = torch.zeros(20000, 2)
    candidates = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]).expand(20000, 3, 2)
    mse = candidate_mse(queries, candidates)
    picks = pick_neighbor(mse, torch.arange(3).expand(20000, 3), "softmax", generator=g)
    freq = torch.bincount(picks, minlength=3).double() / 20000
    np.testing.assert_allclose(
        freq.numpy(), topk_weights(queries, candidates)[0].numpy(), atol=0.01
    )


def test_rejects_bad_input():
    z = _latents()
    with pytest.raises(ValueError, match="channels=C"):
        channel_statistics(z.reshape(z.shape[0], -1))
    with pytest.raises(ValueError, match="not a multiple"):
        channel_statistics(z.reshape(z.shape[0], -1), channels=7)
    with pytest.raises(ValueError, match="NaN or Inf"):
        channel_statistics(z * float("nan"))
    with pytest.raises(ValueError, match="eps"):
        channel_statistics(z, eps=-1.0)
    stats = channel_statistics(z)
    with pytest.raises(ValueError, match="channels"):
        standardize(torch.zeros(2, 3, 4, 4), stats)
    with pytest.raises(ValueError, match="std must be > 0"):
        standardize(z, ChannelStatistics(stats.mean, torch.zeros(4, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"\(Q, k, D\)"):
        candidate_mse(torch.zeros(3, 8), torch.zeros(3, 8))
