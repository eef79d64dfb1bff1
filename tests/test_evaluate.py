import pytest
from torch.utils.data import DataLoader, TensorDataset

from ifid_callback import InterpolatedFID, LatentBank, evaluate_vae
from tests.helpers import RandomFeatures, decode, encode, smooth_images

IN_DIM = 3 * 8 * 8


def loaders():
    queries = smooth_images(40, seed=1)
    reference = smooth_images(300, seed=2)
    return (
        queries,
        reference,
        DataLoader(TensorDataset(queries), batch_size=16),
        DataLoader(TensorDataset(reference), batch_size=64),
    )


def run(query_loader, reference_loader=None, **kwargs):
    """evaluate_vae with the stand-in VAE and features, quietly."""
    return evaluate_vae(
        encoder=encode,
        decoder=decode,
        query_loader=query_loader,
        reference_loader=reference_loader,
        feature=RandomFeatures(IN_DIM),
        progress=False,
        **kwargs,
    )


def test_evaluate_with_reference_matches_the_metric_used_by_hand():
    queries, reference, q_loader, r_loader = loaders()
    out = run(q_loader, r_loader)
    bank = LatentBank(capacity=300)
    bank.add(encode(reference))
    metric = InterpolatedFID(
        encoder=encode, decoder=decode, feature=RandomFeatures(IN_DIM), bank=bank
    )
    metric.update(queries)
    expected = metric.compute()
    assert out["ifid"] == pytest.approx(float(expected["ifid"]), rel=1e-9)
    assert out["rfid"] == pytest.approx(float(expected["rfid"]), rel=1e-9)
    assert (out["num_images"], out["bank_size"]) == (40, 300)


@pytest.mark.parametrize("index", ["exact", "IVF4,Flat"])
def test_streamed_reference_gives_the_same_ifid(index):
    if index != "exact":
        pytest.importorskip("faiss")
    _, _, q_loader, r_loader = loaders()
    in_memory = run(q_loader, r_loader)
    streamed = run(q_loader, r_loader, stream_reference=True, index=index)
    # Neighbours are re-encoded from the dataset, so with the same neighbours the result is equal;
    # a small IVF index scanning enough lists finds the same neighbours on this small set.
    assert streamed["ifid"] == pytest.approx(in_memory["ifid"], rel=1e-6)
    assert streamed["rfid"] == pytest.approx(in_memory["rfid"], rel=1e-9)
    assert streamed["bank_size"] == 300


def test_stream_reference_needs_an_unshuffled_map_style_loader():
    _, reference, q_loader, _ = loaders()
    shuffled = DataLoader(TensorDataset(reference), batch_size=64, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        run(q_loader, shuffled, stream_reference=True)


def test_max_images_and_self_reference():
    _, _, q_loader, _ = loaders()
    out = run(q_loader, max_images=20)
    assert out["num_images"] == 20 and out["bank_size"] == 20
    with pytest.raises(ValueError, match="query_loader"):
        evaluate_vae(encoder=encode, decoder=decode)
