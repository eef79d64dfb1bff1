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
    "alignment_loss",
    "load_vae_checkpoint",
    "relative_latent_noise",
    "train_zoo",
    "train_zoo_member",
    "write_wrapped_checkpoint",
]


@dataclass(frozen=True)
class ZooMember:
    """One VAE of the zoo.

    Attributes:
        name: file-system-safe name (the checkpoint is ``<name>.ckpt``).
        latent_channels: channels of the latent map.
        kl_weight: weight of the KL term per latent value (0: a plain autoencoder objective).
        latent_noise: std of Gaussian noise added to latents before decoding in training,
            relative to the latent's own standard deviation (detached, per sample): denoising
            augmentation the encoder cannot undo by scaling its latents up (0 disables).
        align_weight: weight of a VA-VAE-style alignment of the latent to a frozen network's
            spatial features (0 disables; see :func:`alignment_loss`).
        downsamples: stride-2 stages of this member's TinyVAE (None: the trainer's argument).
        equivariance_weight: weight of an EQ-VAE-style scale-equivariance term (see
            :func:`~ifid_callback.probes.recipe_losses.equivariance_loss`; 0 disables).
        spectral_weight: weight of a penalty on the latent's high-frequency energy fraction
            (see :func:`~ifid_callback.probes.recipe_losses.spectral_loss`; 0 disables).
        steps_fraction: train only this fraction of the steps, on the full run's learning-rate
            schedule (an early checkpoint of the same run: an under-trained VAE; 1 trains all).
        objective: ``"recon"`` (reconstruction only), ``"smooth"``, ``"aligned"``,
            ``"equivariant"``, ``"spectral"`` or ``"undertrained"``: a label for the report.
    """

    name: str
    latent_channels: int = 4
    kl_weight: float = 0.0
    latent_noise: float = 0.0
    align_weight: float = 0.0
    downsamples: int | None = None
    equivariance_weight: float = 0.0
    spectral_weight: float = 0.0
    steps_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.steps_fraction <= 1.0:
            raise ValueError(f"steps_fraction must be in (0, 1], got {self.steps_fraction!r}")
        for key in ("kl_weight", "latent_noise", "align_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        for key in ("equivariance_weight", "spectral_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")

    @property
    def objective(self) -> str:
        if self.align_weight > 0:
            return "aligned"
        if self.equivariance_weight > 0:
            return "equivariant"
        if self.spectral_weight > 0:
            return "spectral"
        if self.steps_fraction < 1:
            return "undertrained"
        return "recon" if self.kl_weight == 0 and self.latent_noise == 0 else "smooth"

    def to_dict(self) -> dict[str, Any]:
        """Its fields and objective; the recipe fields added later appear only when set, so the
        checkpoints of members that do not use them keep their recorded settings."""
        out = dataclasses.asdict(self)
        for key, default in _LATER_FIELDS.items():
            if out[key] == default:
                del out[key]
        return {**out, "objective": self.objective}


_LATER_FIELDS: dict[str, Any] = {
    "downsamples": None,
    "equivariance_weight": 0.0,
    "spectral_weight": 0.0,
    "steps_fraction": 1.0,
}


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


def relative_latent_noise(
    z: Tensor, scale: float, generator: torch.Generator | None = None
) -> Tensor:
    """``z + scale * std(z) * eps``, with ``std`` per sample over ``(C, H, W)`` and detached.

    The noise is relative to the latent's own spread, so the encoder cannot escape it by
    scaling its latents up (which absolute noise rewards), and no gradient flows through the
    noise's size.
    """
    if scale == 0:
        return z
    std = z.detach().flatten(1).std(dim=1).view(-1, *([1] * (z.ndim - 1)))
    eps = torch.randn(z.shape, generator=generator, device="cpu" if generator else z.device)
    return z + scale * std * eps.to(z.device, z.dtype)


def alignment_loss(z: Tensor, target: Tensor, projection: torch.nn.Module) -> Tensor:
    """VA-VAE-style alignment: ``1 - cos`` between the projected latent and frozen features.

    ``z`` ``(B, C, h, w)`` is mapped by ``projection`` (a 1x1 convolution) to the channels of
    ``target`` ``(B, D, h, w)``; the loss is the mean over positions of one minus the cosine
    similarity of the two feature vectors (the marginal cosine term of VA-VAE), in [0, 2].
    """
    proj = projection(z)
    if proj.shape != target.shape:
        raise ValueError(
            f"projected latent {tuple(proj.shape)} and target features {tuple(target.shape)} differ"
        )
    return (1 - torch.nn.functional.cosine_similarity(proj, target, dim=1)).mean()


def _member_loss(
    vae: TinyVAE,
    x: Tensor,
    member: ZooMember,
    align: tuple[torch.nn.Module, torch.nn.Module] | None,
) -> dict[str, Tensor]:
    posterior = vae.encode(x)
    z = posterior.sample()
    recon = vae.decode(relative_latent_noise(z, member.latent_noise))
    rec = torch.nn.functional.mse_loss(recon, x)
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    loss = rec + member.kl_weight * kl
    out = {"recon": rec, "kl": kl, "align": torch.zeros(())}
    if member.equivariance_weight > 0 or member.spectral_weight > 0:
        from .recipe_losses import equivariance_loss, spectral_loss

        if member.equivariance_weight > 0:
            out["equivariance"] = equivariance_loss(z, x, vae.decode)
            loss = loss + member.equivariance_weight * out["equivariance"]
        if member.spectral_weight > 0:
            out["spectral"] = spectral_loss(z)
            loss = loss + member.spectral_weight * out["spectral"]
    if align is not None and member.align_weight > 0:
        teacher, projection = align
        with torch.no_grad():
            target = teacher(x)
        out["align"] = alignment_loss(posterior.mean, target, projection)
        loss = loss + member.align_weight * out["align"]
    out["loss"] = loss
    return out


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
    teacher: torch.nn.Module | None = None,
    teacher_name: str | None = None,
) -> Path:
    """Train one zoo VAE on ``images`` ``(N, C, H, W)`` in [-1, 1] and write its checkpoint.

    ``teacher`` (a frozen module mapping images to ``(B, D, h, w)`` features at the latent's
    resolution, named ``teacher_name`` in the checkpoint) is required by members with an
    ``align_weight``.

    AdamW with a cosine learning-rate decay to 10% of ``lr``; batches are seeded random draws.
    An existing checkpoint at ``path`` written with the same settings is kept (the zoo resumes
    member by member). Returns ``path``.
    """
    path = Path(path)
    downsamples = member.downsamples if member.downsamples is not None else downsamples
    hparams = {
        "tiny_vae_config": dataclasses.asdict(
            TinyVAEConfig(
                in_channels=int(images.shape[1]),
                latent_channels=member.latent_channels,
                base_channels=base_channels,
                downsamples=downsamples,
                # The zoo adds its own (relative) latent noise in training: see _member_loss.
                latent_noise=0.0,
            )
        ),
        "latent_noise": member.latent_noise,
        "latent_noise_mode": "relative",
        "kl_weight": member.kl_weight,
        "zoo_member": member.to_dict(),
        "steps": steps,
        **({"stop_at": _stop_step(member, steps)} if member.steps_fraction < 1 else {}),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }
    if member.align_weight > 0:
        if teacher is None:
            raise ValueError(f"zoo member {member.name} has align_weight > 0: pass a teacher")
        hparams["teacher"] = teacher_name or type(teacher).__name__
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
        align = None
        params = list(vae.parameters())
        if member.align_weight > 0:
            assert teacher is not None
            teacher = teacher.to(device).eval().requires_grad_(False)
            with torch.no_grad():
                dim = int(teacher(images[:2].to(device)).shape[1])
            projection = torch.nn.Conv2d(member.latent_channels, dim, 1).to(device)
            align = (teacher, projection)
            params += list(projection.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    vae.train()
    started, last = time.time(), {}
    bar = tqdm(
        range(_stop_step(member, steps)), desc=member.name, disable=not progress, leave=False
    )
    for _ in bar:
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        with torch.random.fork_rng(devices=[]):  # seeded posterior and latent-noise draws
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            out = _member_loss(vae, images[idx].to(device), member, align)
        if not torch.isfinite(out["loss"]):
            raise FloatingPointError(f"{member.name}: loss became {out['loss'].item()}")
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        schedule.step()
        last = {k: float(v.detach()) for k, v in out.items()}
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


def _stop_step(member: ZooMember, steps: int) -> int:
    """The step an under-trained member stops at (at least 1)."""
    return max(1, int(round(steps * member.steps_fraction)))


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


def write_wrapped_checkpoint(
    base: str | os.PathLike, path: str | os.PathLike, latent_map: dict[str, Any]
) -> Path:
    """Write ``path``: the base VAE checkpoint's weights with a latent map (see
    :mod:`ifid_callback.probes.invertible`) applied after its encoder and undone before its
    decoder. :func:`load_vae_checkpoint` returns it as a
    :class:`~ifid_callback.probes.invertible.WrappedVAE`. An existing file with the same base
    weights and map is kept."""
    from .invertible import build_latent_map

    build_latent_map(latent_map)  # validate before writing anything
    payload = torch.load(Path(base), map_location="cpu", weights_only=True)
    if "latent_map" in payload:
        raise ValueError(f"{base} is already wrapped; wrap the unwrapped base checkpoint")
    payload["latent_map"] = dict(latent_map)
    payload["base_checkpoint"] = Path(base).name
    path = Path(path)
    if path.is_file():
        old = torch.load(path, map_location="cpu", weights_only=True)
        same = old.get("latent_map") == payload["latent_map"] and all(
            torch.equal(old["state_dict"][k], v) for k, v in payload["state_dict"].items()
        )
        if same:
            return path
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_vae_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> TinyVAE | torch.nn.Module:
    """Load a :class:`TinyVAE` from a Lightning-style checkpoint (the demo's or the zoo's).

    The checkpoint must hold a ``state_dict`` in which the VAE's weights sit under some prefix
    (``vae.`` for the demo's ``VAEModule``) and ``hyper_parameters`` with either a
    ``tiny_vae_config`` dict or the :class:`TinyVAEConfig` fields themselves (the demo saves
    ``latent_channels`` and ``base_channels``). Returns the VAE in eval mode on ``device``; a
    checkpoint written by :func:`write_wrapped_checkpoint` gives a
    :class:`~ifid_callback.probes.invertible.WrappedVAE` around it.
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
    if payload.get("latent_map") is not None:
        from .invertible import WrappedVAE, build_latent_map

        wrapped = WrappedVAE(vae, build_latent_map(payload["latent_map"]))
        return wrapped.to(device).eval()
    return vae.to(device).eval()
