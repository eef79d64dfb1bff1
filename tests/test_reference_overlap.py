"""A reference set that contains the query images: refused, or each query's own copies excluded
(exclude_self / --exclude-self), checked against a brute-force pipeline written out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ifid_callback import cli
from ifid_callback.evaluate import evaluate_vae
from tests.helpers import RandomFeatures, decode, encode, numpy_slerp, scipy_fid, smooth_images

SIZE = 8
IN_DIM = 3 * SIZE * SIZE


def _loader(images: torch.Tensor, batch: int = 5):
    return list(images.split(batch))  # any iterable of batches


def _evaluate(queries, reference, **kwargs):
    return evaluate_vae(
        encoder=encode,
        decoder=decode,
        query_loader=_loader(queries),
        reference_loader=_loader(reference),
        feature=RandomFeatures(IN_DIM),
        progress=False,
        **kwargs,
    )


def _brute_force(queries: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Cosine NN among reference rows whose pixels differ from the query, numpy slerp, scipy FID."""
    zq = encode(queries).flatten(1).double().numpy()
    zr = encode(reference).flatten(1).double().numpy()
    same = (queries.flatten(1)[:, None, :] == reference.flatten(1)[None, :, :]).all(-1).numpy()
    unit_q = zq / np.linalg.norm(zq, axis=1, keepdims=True)
    unit_r = zr / np.linalg.norm(zr, axis=1, keepdims=True)
    sim = unit_q @ unit_r.T
    sim[same] = -np.inf
    mixed = np.stack([numpy_slerp(zq[i], zr[j], 0.5) for i, j in enumerate(sim.argmax(1))])
    shape = (len(queries), 3, SIZE // 2, SIZE // 2)
    interp = decode(torch.tensor(mixed, dtype=torch.float32).reshape(shape)).clamp(-1, 1)
    recon = decode(encode(queries)).clamp(-1, 1)
    feat = RandomFeatures(IN_DIM)
    real, fi, fr = (feat(t).double().numpy() for t in (queries, interp, recon))
    return scipy_fid(real, fi), scipy_fid(real, fr)


@pytest.fixture
def data():
    queries = smooth_images(20, 3, SIZE, seed=1)
    others = smooth_images(30, 3, SIZE, seed=2)
    return queries, others


def test_reference_containing_the_queries_is_refused(data):
    queries, others = data
    reference = torch.cat([others[:10], queries, others[10:]])
    with pytest.raises(ValueError, match=r"also in the reference.*exclude_self=True") as info:
        _evaluate(queries, reference)
    assert "rFID" in str(info.value)  # says what would go wrong


def test_exclude_self_matches_brute_force(data):
    queries, others = data
    reference = torch.cat([others[:10], queries, others[10:], queries[:3]])  # 3 queries twice
    result = _evaluate(queries, reference, exclude_self=True)
    ifid, rfid = _brute_force(queries, reference)
    assert result["ifid"] == pytest.approx(ifid, rel=1e-5)
    assert result["rfid"] == pytest.approx(rfid, rel=1e-5)
    assert result["self_matches"] == 20 and result["exclude_self"] is True
    # Without the exclusion every query would find itself: iFID would equal rFID.
    assert abs(result["ifid"] - result["rfid"]) > 1e-3


def test_disjoint_reference_is_unaffected_by_exclude_self(data):
    queries, others = data
    plain = _evaluate(queries, others)
    excluded = _evaluate(queries, others, exclude_self=True)
    assert plain["self_matches"] == excluded["self_matches"] == 0
    assert plain["ifid"] == excluded["ifid"] and plain["rfid"] == excluded["rfid"]
    assert plain["ifid"] == pytest.approx(_brute_force(queries, others)[0], rel=1e-5)


def test_cli_same_folder_as_reference(tmp_path, capsys):
    pytest.importorskip("diffusers")
    from tests.test_cli import save_patches, save_tiny_autoencoder

    vae = save_tiny_autoencoder(tmp_path / "vae")
    images = save_patches(tmp_path / "images", 12)
    start = ["eval", "--vae", str(vae), "--images", str(images), "--reference", str(images)]
    start += ["--feature", "ifid_callback.demo:smoke_features", "--no-progress", "--device", "cpu"]
    assert cli.main(start) == 2
    err = capsys.readouterr().err
    assert "also in the reference" in err and "--exclude-self" in err
    out = tmp_path / "r.json"
    assert cli.main([*start, "--exclude-self", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["self_matches"] == 12 and result["exclude_self"] is True
    assert result["ifid"] != pytest.approx(result["rfid"], rel=1e-6)


def test_reference_given_as_plain_batches_keeps_every_image(data):
    # len() of a list of batches counts batches: the bank must still hold every image.
    queries, others = data
    result = _evaluate(queries, others)
    assert result["bank_size"] == len(others)


def test_streamed_reference_excludes_self_like_the_bank(data):
    from torch.utils.data import DataLoader

    queries, others = data
    reference = torch.cat([others[:10], queries, others[10:]])
    loader = DataLoader(reference, batch_size=7)  # map-style, unshuffled: neighbours re-encoded
    kwargs = dict(
        encoder=encode,
        decoder=decode,
        query_loader=_loader(queries),
        reference_loader=loader,
        progress=False,
        stream_reference=True,
    )
    with pytest.raises(ValueError, match="also in the reference"):
        evaluate_vae(feature=RandomFeatures(IN_DIM), **kwargs)
    streamed = evaluate_vae(feature=RandomFeatures(IN_DIM), exclude_self=True, **kwargs)
    assert streamed["self_matches"] == 20
    assert streamed["ifid"] == pytest.approx(_brute_force(queries, reference)[0], rel=1e-5)
