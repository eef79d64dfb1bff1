"""Offline diffusion probes: SiT models trained on a VAE's latents to measure its gFID.

One module per job. The probe: ``sit`` (the model), ``probe_config``, ``flow_matching``,
``batch_order``, ``checkpoints`` and ``train`` (its training), ``trained_probe`` and ``sampling``.
Measuring: ``fid`` (FID from features), ``gfid``, ``gfid_error`` (gFID's standard error and
paired differences), ``irs``, ``digit_features``. The study: ``study_config``, ``stages`` (its
cache on disk), ``study_data``, ``real_stage``, ``study_vae``, ``ablation``, ``probe_seed``,
``study`` (which runs them) and ``shard`` (which splits its jobs over torchrun's ranks and a
SLURM array's tasks); its report: ``stats``, ``analysis``, ``gfid_pairs``, ``report_markdown``,
``report_plots`` and ``report``. VAE zoos and the digits study: ``zoo``,
``invertible``, ``digits_study``, ``pair`` (the pair check). The command line: ``cli``.

Names are imported lazily, so ``import ifid_callback.probes`` stays cheap. No submodule is named
like an exported name: importing a submodule binds its name on the package, which would replace
the export and make the name mean two things depending on import order.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SIT_SIZES": "sit",
    "LatentNormalizer": "sit",
    "SiT": "sit",
    "SiTConfig": "sit",
    "ProbeTrainConfig": "probe_config",
    "TrainedProbe": "trained_probe",
    "ema_decay_at": "flow_matching",
    "flow_matching_loss": "flow_matching",
    "resolve_time_shift": "probe_config",
    "train_probe": "train",
    "SAMPLERS": "sampling",
    "decode_in_batches": "sampling",
    "inverse_time_shift": "sampling",
    "sample": "sampling",
    "save_image_grid": "sampling",
    "time_grid": "sampling",
    "time_shift": "sampling",
    "CorrelationResult": "stats",
    "bootstrap_correlation": "stats",
    "correlation": "stats",
    "selection_regret": "stats",
    "top_k_overlap": "stats",
    "IRSResult": "irs",
    "coupon_collector_estimate": "irs",
    "image_retrieval_score": "irs",
    "fid_from_features": "fid",
    "generated_features": "gfid",
    "gfid_t": "gfid",
    "regenerated_features": "gfid",
    "GFIDInfluence": "gfid_error",
    "gfid_influence": "gfid_error",
    "gfid_with_error": "gfid_error",
    "paired_gfid_difference": "gfid_error",
    "StudyConfig": "study_config",
    "load_study": "study",
    "run_study": "study",
    "DEFAULT_ZOO": "zoo",
    "ZooMember": "zoo",
    "load_vae_checkpoint": "zoo",
    "train_zoo": "zoo",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
