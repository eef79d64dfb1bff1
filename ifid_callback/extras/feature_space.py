"""iFID and rFID in a second feature space (e.g. DINOv2 next to Inception), from the same pass.

The extra owns the second network and its own float64 FID sums for the real images, the
interpolants and the reconstructions. It sees each query image once (while its real statistics
are still to be computed) and each decode once: the images the metric already decoded for its
first space, so a batch is encoded and decoded once whatever the number of spaces.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ifid_callback.extras.base import Extra, PairedRows
from ifid_callback.fid_state import RealRoot, feature_sums, fids, sum_states
from ifid_callback.interpolation_pass import features as checked_features
from ifid_callback.metric_networks import feature_dimension

SETS = ("real", "interp", "recon")


class FeatureSpaceFID(Extra):
    """``"ifid_<space>"``, ``"rfid_<space>"``: the Fréchet distances of the interpolants and of
    the reconstructions to the query images in the features of ``net``.

    States (float64 sums, int64 counts, summed over ranks): ``<space>_{real,interp,recon}_
    features_sum``, ``..._features_cov_sum``, ``..._num_samples``. The real ones are real-image
    statistics: kept across ``reset()`` with ``reset_real_features=False`` and part of the
    metric's ``real_statistics()``.

    Args:
        space: the name of the space, the key suffix (``"dinov2"``).
        net: a module mapping images in the metric's input range to (B, d) features. A child,
            so it moves with the metric; its weights stay out of ``state_dict``.
        input_range: (low, high) of the images (named in the errors of bad features).
        compute_rfid: whether the reconstructions are decoded (``rfid_<space>``).
    """

    key = "feature"
    scores_decodes = True

    def __init__(
        self, space: str, net: nn.Module, input_range: tuple[float, float], compute_rfid: bool
    ) -> None:
        super().__init__()
        self.space, self.net, self.input_range = space, net, input_range
        self.compute_rfid = compute_rfid
        self.num_features = feature_dimension(net)
        self._root = RealRoot()

    def _name(self, set_name: str) -> str:
        return f"{self.space}_{set_name}"

    def states(self) -> dict[str, Tensor]:
        out = {}
        for set_name in SETS:
            one = sum_states(self.num_features)
            for part in ("features_sum", "features_cov_sum", "num_samples"):
                out[f"{self._name(set_name)}_{part}"] = one[f"{set_name}_{part}"]
        return out

    def real_states(self) -> tuple[str, ...]:
        return tuple(name for name in self.states() if name.startswith(self._name("real_")))

    def interp_states(self) -> tuple[str, ...]:
        return tuple(name for name in self.states() if name.startswith(self._name("interp_")))

    def _sums(self, set_name: str, images: Tensor) -> dict[str, Tensor]:
        f = checked_features(self.net, images, self.num_features, self.input_range)
        found = feature_sums(set_name, f)
        return {f"{self.space}_{key}": value for key, value in found.items()}

    def score_real(self, images: Tensor) -> dict[str, Tensor]:
        return self._sums("real", images)

    def score_decodes(self, decoded: Mapping[str, Tensor]) -> dict[str, Tensor]:
        # One call of the network for every decode of the batch, as for the first space.
        names = list(decoded)
        f = checked_features(
            self.net, torch.cat([decoded[n] for n in names]), self.num_features, self.input_range
        )
        out, start = {}, 0
        for name in names:
            rows = f[start : start + decoded[name].shape[0]]
            start += rows.shape[0]
            out.update({f"{self.space}_{k}": v for k, v in feature_sums(name, rows).items()})
        return out

    def compute(self, state: Mapping[str, Tensor], rows: PairedRows | None) -> dict[str, Tensor]:
        plain = {key.removeprefix(f"{self.space}_"): value for key, value in state.items()}
        if int(plain["real_num_samples"]) < 2:
            raise ValueError(
                f"ifid_{self.space} needs the {self.space} features of at least 2 query images, "
                f"got {int(plain['real_num_samples'])} (real statistics loaded without the "
                f"{self.space} ones are computed again in the next round)."
            )
        names = ("interp", "recon") if self.compute_rfid else ("interp",)
        found = fids(plain, plain, self._root, names)
        return {f"{key}_{self.space}": value for key, value in found.items()}
