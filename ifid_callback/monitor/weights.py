"""Which weights an evaluation measures: the training VAE, an averaged copy (EMA/SWA) or both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ifid_callback.vae import VAEAdapter, eval_mode

__all__ = ["WeightsSource", "eval_mode", "unwrap_averaged", "vae_adapter", "weights_by_suffix"]


def unwrap_averaged(obj: Any) -> Any:
    """The model inside an averaging wrapper, and its VAE when the model carries one.

    Understood: ``torch.optim.swa_utils.AveragedModel`` (``.module``), ``ema_pytorch.EMA``
    (``.ema_model``), a DDP/FSDP-style wrapper (``.module``), and then a model with a ``vae``
    attribute (a LightningModule or Trainer model holding the VAE).
    """
    for _ in range(4):  # wrappers nest at most a few levels (EMA of a DDP module, ...)
        if callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None)):
            return obj
        if hasattr(obj, "ema_model"):
            obj = obj.ema_model
        elif isinstance(obj, nn.Module) and isinstance(getattr(obj, "module", None), nn.Module):
            obj = obj.module
        elif getattr(obj, "vae", None) is not None:
            obj = obj.vae
        else:
            break
    if not (callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None))):
        raise TypeError(
            f"Cannot evaluate {type(obj).__name__}: pass a VAE with encode()/decode(), a model "
            "with a `vae` attribute, a torch.optim.swa_utils.AveragedModel or ema_pytorch.EMA of "
            "one, or a callable returning one of these."
        )
    return obj


def vae_adapter(vae: Any, sample_posterior: bool) -> VAEAdapter:
    """A :class:`VAEAdapter` over ``vae`` (it casts for fp16/bf16 VAEs)."""
    return VAEAdapter(vae=vae, sample_posterior=sample_posterior)


class WeightsSource:
    """A VAE to evaluate, given now or found at each evaluation.

    Args:
        source: a VAE (``encode``/``decode``), an ``AveragedModel``/``ema_pytorch.EMA``/model
            holding one (see :func:`unwrap_averaged`), or a callable with no arguments returning
            one of these (for averaged copies created after the monitor, e.g. by a callback).
        sample_posterior: as in :class:`~ifid_callback.metric.InterpolatedFID`.
    """

    def __init__(self, source: Any, sample_posterior: bool) -> None:
        self.source = source
        self.sample_posterior = sample_posterior
        self._adapter: VAEAdapter | None = None
        self._for: Any = None
        if _is_model(source):
            self.adapter()  # fails now on an object that cannot be evaluated

    def adapter(self) -> VAEAdapter:
        """The adapter over the current VAE (re-resolved when a callable returns another one)."""
        obj = self.source if _is_model(self.source) else self.source()
        vae = unwrap_averaged(obj)
        if self._adapter is None or self._for is not vae:
            self._adapter, self._for = vae_adapter(vae, self.sample_posterior), vae
        return self._adapter


def weights_by_suffix(
    eval_vae: Any, extra_vaes: Mapping[str, Any], sample_posterior: bool
) -> dict[str, WeightsSource | None]:
    """The weights one evaluation measures, by the suffix of their result keys.

    ``""``: ``eval_vae`` (None: the training VAE); ``"_<name>"``: each of ``extra_vaes``.
    """
    weights: dict[str, WeightsSource | None] = {
        "": WeightsSource(eval_vae, sample_posterior) if eval_vae is not None else None
    }
    for name, source in extra_vaes.items():
        weights[f"_{name}"] = WeightsSource(source, sample_posterior)
    return weights


def _is_model(obj: Any) -> bool:
    # nn.Modules are callable too: a module (or anything with encode/decode or a wrapped model)
    # is the thing itself, other callables produce it.
    return (
        isinstance(obj, nn.Module)
        or hasattr(obj, "ema_model")
        or callable(getattr(obj, "encode", None))
        or not callable(obj)
    )
