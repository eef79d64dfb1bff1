import numpy as np
import pytest
import torch

from ifid_callback import InterpolatedFID, LatentBank
from tests.helpers import RandomFeatures, decode, encode, numpy_slerp, scipy_fid, smooth_images

SIZE = 8
IN_DIM = 3 * SIZE * SIZE


def make_metric(**kwargs):
    kwargs.setdefault("feature", RandomFeatures(IN_DIM))
    return InterpolatedFID(encoder=encode, decoder=decode, **kwargs)


def features_np(x: torch.Tensor, net: RandomFeatures) -> np.ndarray:
    return net(x.clamp(-1, 1)).double().numpy()


def reference_ifid(queries, bank_latents, alpha, net, self_exclude=False):
    """Brute-force iFID/rFID: cosine NN in numpy, numpy slerp, same decoder and features."""
    z = encode(queries).reshape(len(queries), -1).double().numpy()
    ref = bank_latents.reshape(len(bank_latents), -1).double().numpy()
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    rn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    sim = zn @ rn.T
    if self_exclude:
        np.fill_diagonal(sim, -np.inf)
    nn_idx = sim.argmax(1)
    z_hat = np.stack([numpy_slerp(z[i], ref[j], alpha) for i, j in enumerate(nn_idx)])
    shape = (len(queries), 3, SIZE // 2, SIZE // 2)
    interp = decode(torch.from_numpy(z_hat).float().reshape(shape))
    recon = decode(torch.from_numpy(z).float().reshape(shape))
    real = features_np(queries, net)
    return scipy_fid(real, features_np(interp, net)), scipy_fid(real, features_np(recon, net))


def test_bank_mode_matches_brute_force_reference():
    queries, reference = smooth_images(64, seed=1), smooth_images(80, seed=2)
    bank = LatentBank(capacity=100)
    bank.add(encode(reference))
    metric = make_metric(bank=bank)
    for chunk in queries.split(16):
        metric.update(chunk)
    out = metric.compute()
    ifid, rfid = reference_ifid(queries, encode(reference), 0.5, metric.feature_net)
    assert float(out["ifid"]) == pytest.approx(ifid, rel=1e-5)
    assert float(out["rfid"]) == pytest.approx(rfid, rel=1e-5)
    assert float(out["ifid"]) > float(out["rfid"]) > 0


def test_self_reference_mode_excludes_self_and_matches_reference():
    queries = smooth_images(60, seed=3)
    metric = make_metric(bank=None)
    for chunk in queries.split(25):
        metric.update(chunk)
    out = metric.compute()
    ifid, rfid = reference_ifid(
        queries, encode(queries), 0.5, metric.feature_net, self_exclude=True
    )
    assert float(out["ifid"]) == pytest.approx(ifid, rel=1e-5)
    assert float(out["rfid"]) == pytest.approx(rfid, rel=1e-5)


def test_alpha_zero_gives_ifid_equal_to_rfid():
    queries = smooth_images(40, seed=4)
    bank = LatentBank(capacity=50)
    bank.add(encode(smooth_images(50, seed=5)))
    metric = make_metric(bank=bank, alpha=0.0)
    metric.update(queries)
    out = metric.compute()
    assert float(out["ifid"]) == float(out["rfid"])


def test_alpha_one_linear_gives_fid_of_decoded_neighbours():
    queries, reference = smooth_images(40, seed=6), smooth_images(30, seed=7)
    bank = LatentBank(capacity=30)
    bank.add(encode(reference))
    metric = make_metric(bank=bank, interpolation="linear", alpha=1.0)
    metric.update(queries)
    out = metric.compute()
    zq = encode(queries).reshape(40, -1)
    zr = encode(reference).reshape(30, -1)
    nn_idx = torch.cdist(zq.double(), zr.double()).argmin(1)
    neighbours = decode(encode(reference)[nn_idx])
    net = metric.feature_net
    expected = scipy_fid(features_np(queries, net), features_np(neighbours, net))
    assert float(out["ifid"]) == pytest.approx(expected, rel=1e-5)


def test_query_in_bank_is_never_its_own_neighbour_when_ids_given():
    queries = smooth_images(30, seed=8)
    bank = LatentBank(capacity=30)
    ids = bank.add(encode(queries))
    metric = make_metric(bank=bank, alpha=1.0, interpolation="linear")
    z = encode(queries)
    _, nn_ids = metric.neighbors(z, exclude=ids)
    assert not torch.equal(nn_ids, ids)
    assert (nn_ids != ids).all()
    # Without ids the nearest row is the query itself (distance 0): iFID would equal rFID.
    _, self_ids = metric.neighbors(z)
    assert torch.equal(self_ids, ids)


def test_topk_pick_is_seeded_and_preset_paper():
    queries = smooth_images(32, seed=9)
    bank = LatentBank(capacity=64)
    bank.add(encode(smooth_images(64, seed=10)))
    a = make_metric(bank=bank, k=5, seed=1)
    b = make_metric(bank=bank, k=5, seed=1)
    c = make_metric(bank=bank, k=5, seed=2)
    for m in (a, b, c):
        m.update(queries)
    assert float(a.compute()["ifid"]) == float(b.compute()["ifid"])
    assert float(a.compute()["ifid"]) != float(c.compute()["ifid"])
    paper = make_metric(bank=bank, preset="paper")
    assert (paper.k, paper.pick, paper.vae.sample_posterior) == (10, "softmax_mse", True)


def test_real_statistics_cached_across_resets():
    queries = smooth_images(40, seed=11)
    bank = LatentBank(capacity=40)
    bank.add(encode(smooth_images(40, seed=12)))
    metric = make_metric(bank=bank, reset_real_features=False)
    metric.update(queries)
    first = metric.compute()
    calls = metric.feature_net.calls
    metric.reset()
    metric.update(queries)
    assert metric.feature_net.calls == calls + 1  # decodes only, the real pass is skipped
    second = metric.compute()
    assert float(first["ifid"]) == pytest.approx(float(second["ifid"]), rel=1e-9)
    assert int(metric.real_num_samples) == 40


def test_feature_network_not_in_state_dict_and_round_trip():
    metric = make_metric(bank=None)
    keys = metric.state_dict().keys()
    assert not any("feature_net" in k for k in keys)
    holder = torch.nn.Module()
    holder.metric = metric
    assert not any("feature_net" in k for k in holder.state_dict())
    holder.load_state_dict(holder.state_dict())  # strict load works without the feature weights


def test_compute_rfid_false_decodes_only_interpolants():
    bank = LatentBank(capacity=20)
    bank.add(encode(smooth_images(20, seed=13)))
    decoded = []

    def counting_decode(z):
        decoded.append(z.shape[0])
        return decode(z)

    metric = InterpolatedFID(
        encoder=encode,
        decoder=counting_decode,
        feature=RandomFeatures(IN_DIM),
        bank=bank,
        compute_rfid=False,
    )
    metric.update(smooth_images(10, seed=14))
    assert decoded == [10] and set(metric.compute()) == {"ifid"}
    metric2 = InterpolatedFID(
        encoder=encode, decoder=counting_decode, feature=RandomFeatures(IN_DIM), bank=bank
    )
    decoded.clear()
    metric2.update(smooth_images(10, seed=14))
    assert decoded == [20]  # reconstruction and interpolant in one batched call


def test_diffusers_autoencoder_kl_is_driven_directly():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
    ).eval()
    queries = smooth_images(12, size=16, seed=15)
    metric = InterpolatedFID(vae=vae, feature=RandomFeatures(3 * 16 * 16), bank=None)
    metric.update(queries)
    out = metric.compute()
    assert torch.isfinite(out["ifid"]) and torch.isfinite(out["rfid"])
    posterior = vae.encode(queries).latent_dist
    torch.testing.assert_close(metric._encode(queries), posterior.mean)


def test_rfid_equals_torchmetrics_fid_with_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    queries = smooth_images(48, seed=16)
    net = RandomFeatures(IN_DIM)
    metric = make_metric(bank=None, feature=net)
    metric.update(queries)
    ours = float(metric.compute()["rfid"])
    reference = FrechetInceptionDistance(feature=net)
    reference.update(queries, real=True)
    reference.update(decode(encode(queries)).clamp(-1, 1), real=False)
    assert ours == pytest.approx(float(reference.compute()), rel=1e-5)


def test_builtin_inception_runs_offline_through_the_metric():
    from ifid_callback.features import InceptionFeatures

    queries = smooth_images(4, size=16, seed=17)
    metric = InterpolatedFID(encoder=encode, decoder=decode, feature="inception", bank=None)
    assert isinstance(metric.feature_net, InceptionFeatures) and metric.num_features == 2048
    metric.update(queries)
    out = metric.compute()
    assert torch.isfinite(out["ifid"]) and float(out["ifid"]) >= 0
    # The real-image statistics are those of the extractor applied directly.
    direct = metric.feature_net(queries).double()
    torch.testing.assert_close(metric.real_features_sum, direct.sum(0), rtol=1e-6, atol=1e-6)
