"""'auto' under a memory budget: the compressed index it picks fits the budget, or is refused."""

import pytest
import torch

pytest.importorskip("faiss")

from ifid_callback.index import NeighborIndex, choose_nlist, ivf_memory_bytes  # noqa: E402


def _clustered(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(32, dim, generator=g)
    return centres[torch.randint(0, 32, (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("codec", ["SQ8", "PQ8", "PQ4"])
def test_size_formula_matches_the_built_index(codec, one_thread):
    x = _clustered(4000, 32)
    nlist = choose_nlist(len(x))
    index = NeighborIndex(f"IVF{nlist},{codec}").build(x)
    assert index.memory_bytes == ivf_memory_bytes(len(x), 32, nlist, codec)


def test_auto_picks_the_most_subquantizers_that_fit(one_thread):
    # 20,000 x 64: IVF566,PQ16 (D/4) holds 690,432 bytes, PQ8 530,432; the budget lies between.
    x = _clustered(20_000, 64)
    index = NeighborIndex("auto", memory_budget_bytes=600_000).build(x)
    assert index.kind == "IVF566,PQ8"
    assert index.memory_bytes <= 600_000
    # A roomier budget keeps D/4.
    assert NeighborIndex("auto", memory_budget_bytes=700_000).kind_for(x) == "IVF566,PQ16"


def test_imagenet_scale_plan_fits_one_gib():
    # 1.28M x 4096 at 1 GiB: PQ1024 (D/4) would hold about 1.39 GB; PQ512 fits.
    index = NeighborIndex("auto", memory_budget_bytes=2**30)
    kind = index._resolve(1_281_167, 4096, 4, cuda=False)
    assert kind == "IVF4096,PQ512"
    assert ivf_memory_bytes(1_281_167, 4096, 4096, "PQ512") <= 2**30
    assert ivf_memory_bytes(1_281_167, 4096, 4096, "PQ1024") > 2**30


def test_stored_ids_count_against_the_budget(one_thread):
    x = _clustered(20_000, 64)
    ids = torch.arange(len(x)) * 3
    index = NeighborIndex("auto", memory_budget_bytes=700_000).build(x, ids)
    assert index.memory_bytes <= 700_000, (index.kind, index.memory_bytes)
    assert index.kind == "IVF566,PQ8"  # PQ16 plus 8 bytes of id per row no longer fits


def test_streamed_build_fits_its_budget(one_thread):
    x = _clustered(20_000, 64)
    index = NeighborIndex("auto", memory_budget_bytes=600_000)
    index.build_streaming((x[i : i + 4000] for i in range(0, len(x), 4000)), total=len(x))
    assert index.memory_bytes <= 600_000, (index.kind, index.memory_bytes)


def test_a_budget_nothing_fits_is_refused_and_the_index_is_kept(one_thread):
    x = _clustered(20_000, 64)
    index = NeighborIndex("auto", memory_budget_bytes=250_000)
    with pytest.raises(ValueError, match=r"too small.*IVF566,PQ1.*at least \d+"):
        index.build(x)
    with pytest.raises(ValueError, match="the index is empty"):
        _ = index.memory_bytes
