"""A built NeighborIndex survives deepcopy, pickle and torch.save, and its copy is independent."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch

from ifid_callback.index import NeighborIndex

faiss = pytest.importorskip("faiss")

N, D, Q, K = 2000, 32, 60, 4


def _clustered(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(40, D, generator=g) * 3
    return centres[torch.randint(0, 40, (n,), generator=g)] + torch.randn(n, D, generator=g)


def _torch_copy(index: NeighborIndex) -> NeighborIndex:
    buffer = io.BytesIO()
    torch.save(index, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda index: pickle.loads(pickle.dumps(index)),
    "torch.save": _torch_copy,
}


def _build(kind: str, vectors: torch.Tensor, ids: torch.Tensor) -> NeighborIndex:
    """A built index of ``kind``; "stream" is IVF-SQ8 made by build_streaming with ids."""
    if kind == "stream":
        chunks = [(vectors[i : i + 300], ids[i : i + 300]) for i in range(0, len(vectors), 300)]
        return NeighborIndex("ivf-sq8", seed=0).build_streaming(chunks, total=len(vectors))
    return NeighborIndex(kind, seed=0).build(vectors, ids)


KINDS = ["exact", "ivf", "hnsw", "ivf-pq", "stream"]


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    vectors = _clustered(N, seed=0)
    # Repeated ids, so that exclusion removes several rows per query.
    ids = torch.arange(N, dtype=torch.int64) // 3
    queries = _clustered(Q, seed=1)
    return {"vectors": vectors, "ids": ids, "queries": queries, "exclude": ids[:Q].clone()}


def _answers(index: NeighborIndex, data: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    d, pos = index.search_rows(data["queries"], k=K)
    d_ex, pos_ex = index.search_rows(data["queries"], k=K, exclude=data["exclude"])
    return [d, pos, d_ex, pos_ex, index.ids_of(pos_ex)]


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_copy_answers_exactly_like_the_original(kind, how, data):
    source = _build(kind, data["vectors"], data["ids"])
    want = _answers(source, data)
    clone = COPIES[how](source)
    _assert_same(_answers(clone, data), want)
    assert (clone.kind, len(clone), clone.dim) == (source.kind, len(source), source.dim)
    assert clone.memory_bytes == source.memory_bytes
    # Copying read the source without changing it.
    _assert_same(_answers(source, data), want)


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_copy_is_independent_of_its_source(kind, how, data):
    vectors = data["vectors"].clone()  # the exact index keeps these very rows
    source = _build(kind, vectors, data["ids"])
    want = _answers(source, data)
    clone = COPIES[how](source)
    # Changing the rows the source was built from, then rebuilding the source on other rows.
    vectors.mul_(-1.0)
    source.build(_clustered(500, seed=7))
    assert len(source) == 500
    _assert_same(_answers(clone, data), want)
    # And the other way round: rebuilding the copy leaves a second copy alone.
    second = COPIES[how](clone)
    clone.build(_clustered(300, seed=8))
    _assert_same(_answers(second, data), want)


def test_a_copy_of_a_copy_and_an_unbuilt_index_behave(data):
    empty = copy.deepcopy(NeighborIndex("ivf", nprobe=3, seed=5))
    assert (empty.index, empty.nprobe, empty.seed, len(empty)) == ("ivf", 3, 5, 0)
    with pytest.raises(ValueError, match="empty"):
        empty.search_rows(data["queries"])
    built = empty.build(data["vectors"])
    twice = pickle.loads(pickle.dumps(copy.deepcopy(built)))
    _assert_same(
        _answers(twice, {**data, "exclude": torch.arange(Q)}),
        _answers(built, {**data, "exclude": torch.arange(Q)}),
    )


@pytest.mark.parametrize("gpus", [0, 1])
def test_a_gpu_faiss_index_travels_through_a_cpu_copy(monkeypatch, data, gpus):
    """faiss cannot serialise a GPU index: the copy serialises a CPU copy of it and puts the
    result back on the GPUs when faiss sees some, else keeps it on the CPU. (No GPU build of faiss
    here: the GPU calls are stand-ins that record what they were given.)"""
    source = NeighborIndex("ivf", seed=0).build(data["vectors"], data["ids"])
    want = _answers(source, data)
    calls: list[str] = []

    def gpu_to_cpu(index):
        calls.append("to_cpu")
        return faiss.clone_index(index)

    def cpu_to_gpus(index, co=None):
        calls.append("to_gpus")
        return index

    class ClonerOptions:
        shard = False

    monkeypatch.setattr(faiss, "index_gpu_to_cpu", gpu_to_cpu, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", cpu_to_gpus, raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", ClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus)
    monkeypatch.setattr(source._faiss, "on_gpu", True)  # as if built from CUDA vectors
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clone = pickle.loads(pickle.dumps(source))
    assert calls == (["to_cpu", "to_gpus"] if gpus else ["to_cpu"])
    assert clone._gpu == bool(gpus)
    monkeypatch.setattr(source._faiss, "on_gpu", False)
    _assert_same(_answers(clone, data), want)
