"""Pure functions of the metric: interpolation, nearest neighbours and Fréchet distance.

Each step of iFID can be called on its own::

    z_nn = bank[nearest_neighbors(z, bank, distance="cosine")[1][:, 0]]
    z_hat = interpolate(z, z_nn, "slerp", alpha=0.5)
    fid = frechet_distance(*statistics_of(real_features), *statistics_of(fake_features))
"""

from ifid_callback.functional.channel_norm import (
    ChannelStatistics,
    candidate_mse,
    channel_statistics,
    standardize,
    topk_weights,
)
from ifid_callback.functional.frechet import frechet_distance, gaussian_statistics, statistics_of
from ifid_callback.functional.interpolation import INTERPOLATIONS, interpolate
from ifid_callback.functional.kid import (
    KIDResult,
    kernel_inception_distance,
    kernel_inception_distances,
)
from ifid_callback.functional.knn_manifold import (
    PrecisionRecall,
    manifold_radii,
    precision_recall,
)
from ifid_callback.functional.neighbors import nearest_neighbors, pick_neighbor
from ifid_callback.functional.paired import PairedDifference, paired_difference
from ifid_callback.functional.reconstruction import (
    ReconstructionSums,
    reconstruction_means,
    reconstruction_sums,
)
from ifid_callback.functional.uncertainty import (
    FIDInfluence,
    FIDWithError,
    frechet_influence,
    frechet_influence_vectors,
    frechet_jackknife,
    influence_standard_error,
    recommend_min_delta,
    sample_space_frechet_distance,
)

__all__ = [
    "ChannelStatistics",
    "FIDInfluence",
    "FIDWithError",
    "INTERPOLATIONS",
    "KIDResult",
    "PairedDifference",
    "PrecisionRecall",
    "ReconstructionSums",
    "candidate_mse",
    "channel_statistics",
    "frechet_distance",
    "frechet_influence",
    "frechet_influence_vectors",
    "frechet_jackknife",
    "gaussian_statistics",
    "influence_standard_error",
    "interpolate",
    "kernel_inception_distance",
    "kernel_inception_distances",
    "manifold_radii",
    "nearest_neighbors",
    "paired_difference",
    "pick_neighbor",
    "precision_recall",
    "recommend_min_delta",
    "reconstruction_means",
    "reconstruction_sums",
    "sample_space_frechet_distance",
    "standardize",
    "statistics_of",
    "topk_weights",
]
