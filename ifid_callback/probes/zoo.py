"""A zoo of small VAEs whose latent spaces differ the way the iFID paper says matters.

The recipe trains :class:`~ifid_callback.tiny_vae.TinyVAE` models on the embedded photo patches
(or any image tensor), spanning the KL weight, the latent channel count, latent-noise
(denoising) augmentation, and a reconstruction-only objective versus smoothness-regularised ones,
so that reconstruction quality and latent smoothness pull in different directions across the
zoo. Each model is written as a Lightning-style checkpoint (``state_dict`` with a ``vae.``
prefix, ``hyper_parameters`` with its :class:`~ifid_callback.tiny_vae.TinyVAEConfig`), the same
layout as the demo's checkpoints, so :func:`load_vae_checkpoint` reads both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..tiny_vae import TinyVAE, TinyVAEConfig

__all__ = [
    "DEFAULT_ZOO",
    "ZooMember",
    "load_vae_checkpoint",
    "train_zoo",
    "train_zoo_member",
]


@dataclass(frozen=True)
class ZooMember:
    """One VAE of the zoo.

    Attributes:
        name: file-system-safe name (the checkpoint is ``<name>.ckpt``).
        latent_channels: channels of the latent map.
        kl_weight: weight of the KL term per latent value (0: a plain autoencoder objective).
        latent_noise: std of Gaussian noise added to latents before decoding in training
            (denoising augmentation; 0 disables).
        objective: ``"recon"`` (reconstruction only) or ``"smooth"`` (regularised), a label for
            the report derived from the two regularisers.
    """

    name: str
    latent_channels: int = 4
    kl_weight: float = 0.0
    latent_noise: float = 0.0

    @property
    def objective(self) -> str:
        return "recon" if self.kl_weight == 0 and self.latent_noise == 0 else "smooth"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "objective": self.objective}


#: Ten members: three reconstruction-only autoencoders (2, 4 and 8 channels), a KL-weight sweep at
#: 4 channels, KL at 8 channels, and latent-noise augmentation with and without KL.
DEFAULT_ZOO: tuple[ZooMember, ...] = (
    ZooMember("ae-c4", 4),
    ZooMember("ae-c8", 8),
    ZooMember("ae-c2", 2),
    ZooMember("kl1e-4-c4", 4, kl_weight=1e-4),
    ZooMember("kl1e-3-c4", 4, kl_weight=1e-3),
    ZooMember("kl1e-2-c4", 4, kl_weight=1e-2),
    ZooMember("kl1e-1-c4", 4, kl_weight=1e-1),
    ZooMember("kl1e-3-c8", 8, kl_weight=1e-3),
    ZooMember("kl1e-3-c4-noise0.3", 4, kl_weight=1e-3, latent_noise=0.3),
    ZooMember("ae-c4-noise0.3", 4, latent_noise=0.3),
)


def train_zoo_member(
    member: ZooMember,
    images: Tensor,
    path: str | os.PathLike,
    *,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 2e-3,
    base_channels: int = 32,
    downsamples: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Path:
    """Train one zoo VAE on ``images`` ``(N, 3, H, W)`` in [-1, 1] and write its checkpoint.

    AdamW with a cosine learning-rate decay to 10% of ``lr``; batches are seeded random draws.
    An existing checkpoint at ``path`` written with the same settings is kept (the zoo resumes
    member by member). Returns ``path``.
    """
    path = Path(path)
    hparams = {
        "tiny_vae_config": dataclasses.asdict(
            TinyVAEConfig(
                in_channels=int(images.shape[1]),
                latent_channels=member.latent_channels,
                base_channels=base_channels,
                downsamples=downsamples,
                latent_noise=member.latent_noise,
            )
        ),
        "kl_weight": member.kl_weight,
        "zoo_member": member.to_dict(),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters")
        if saved == hparams:
            return path
    if images.ndim != 4 or images.shape[0] < batch_size:
        raise ValueError(
            f"images must be (N >= batch_size, C, H, W), got {tuple(images.shape)} "
            f"with batch_size={batch_size}"
        )
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = TinyVAE(TinyVAEConfig(**hparams["tiny_vae_config"])).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    vae.train()
    started, last = time.time(), {}
    bar = tqdm(range(steps), desc=member.name, disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        with torch.random.fork_rng(devices=[]):  # seeded posterior and latent-noise draws
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            out = vae.loss(images[idx].to(device), kl_weight=member.kl_weight)
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"{member.name}: loss became {out['loss'].item()}")
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        schedule.step()
        last = {k: float(out[k].detach()) for k in ("loss", "recon", "kl")}
        bar.set_postfix(recon=f"{last['recon']:.4f}")
    bar.close()
    vae.eval()
    payload = {
        "state_dict": {f"vae.{k}": v.detach().cpu() for k, v in vae.state_dict().items()},
        "hyper_parameters": hparams,
        "final_losses": last,
        "train_seconds": time.time() - started,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def train_zoo(
    out_dir: str | os.PathLike,
    images: Tensor,
    members: Sequence[ZooMember] = DEFAULT_ZOO,
    **kwargs: Any,
) -> list[Path]:
    """Train every member (skipping finished ones) into ``out_dir``; writes ``zoo.json`` with the
    members and checkpoint paths. ``kwargs`` go to :func:`train_zoo_member`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [train_zoo_member(m, images, out / f"{m.name}.ckpt", **kwargs) for m in members]
    (out / "zoo.json").write_text(
        json.dumps(
            {"members": [m.to_dict() for m in members], "checkpoints": [p.name for p in paths]},
            indent=2,
        )
    )
    return paths


def load_vae_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> TinyVAE:
    """Load a :class:`TinyVAE` from a Lightning-style checkpoint (the demo's or the zoo's).

    The checkpoint must hold a ``state_dict`` in which the VAE's weights sit under some prefix
    (``vae.`` for the demo's ``VAEModule``) and ``hyper_parameters`` with either a
    ``tiny_vae_config`` dict or the :class:`TinyVAEConfig` fields themselves (the demo saves
    ``latent_channels`` and ``base_channels``). Returns the VAE in eval mode on ``device``.
    """
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"{path} is not a Lightning-style checkpoint (no 'state_dict')")
    state = payload["state_dict"]
    marker = "encoder.0.0.weight"
    prefixes = [k[: -len(marker)] for k in state if k.endswith(marker)]
    if len(prefixes) != 1:
        raise ValueError(
            f"{path}: expected exactly one TinyVAE in the state_dict (a key ending in "
            f"{marker!r}), found {len(prefixes)}"
        )
    prefix = prefixes[0]
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    hp = payload.get("hyper_parameters") or {}
    fields = {f.name for f in dataclasses.fields(TinyVAEConfig)}
    config_dict = hp.get("tiny_vae_config") or {k: v for k, v in hp.items() if k in fields}
    # Shapes that the hyper-parameters may not record are read off the weights.
    config_dict.setdefault("in_channels", int(weights["encoder.0.0.weight"].shape[1]))
    config_dict.setdefault("base_channels", int(weights["encoder.0.0.weight"].shape[0]))
    head = max(int(k.split(".")[1]) for k in weights if k.startswith("encoder."))
    config_dict.setdefault("latent_channels", int(weights[f"encoder.{head}.weight"].shape[0]) // 2)
    vae = TinyVAE(TinyVAEConfig(**{k: v for k, v in config_dict.items() if k in fields}))
    try:
        vae.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(
            f"{path}: the weights under {prefix!r} do not fit TinyVAE({config_dict}): {exc}"
        ) from exc
    return vae.to(device).eval()
