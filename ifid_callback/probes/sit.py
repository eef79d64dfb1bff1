"""SiT probe: a compact DiT-style transformer that predicts the flow-matching velocity on latents.

Time convention (shared with :mod:`ifid_callback.probes.flow_matching` and
:mod:`ifid_callback.probes.sampling`): ``x_t = (1 - t) * x + t * eps`` with ``t`` in ``[0, 1]``,
``t = 0`` is data and ``t = 1`` is Gaussian noise; the model predicts ``v = eps - x``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SIT_SIZES",
    "LatentNormalizer",
    "SiT",
    "SiTConfig",
    "sincos_pos_embed_2d",
    "timestep_embedding",
]

#: Named sizes as ``(depth, hidden_size, num_heads)``. "tiny" trains on CPU in minutes on 8x8x4
#: latents; "S"/"B"/"L"/"XL" are the SiT/DiT sizes (about 33M/130M/458M/675M parameters with
#: patch size 2 on 32x32x4 latents).
SIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (4, 192, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}

_PATCH_SIZES = (1, 2, 4)


@dataclass
class SiTConfig:
    """Architecture of a :class:`SiT` probe.

    Args:
        input_size: spatial side of the (square) latent, in latent pixels.
        in_channels: latent channels ``C``; the model maps ``(B, C, H, W)`` to the same shape.
        patch_size: side of a patch (1, 2 or 4); must divide ``input_size``.
        hidden_size: transformer width; a multiple of 4 (for the 2-D sin-cos embedding) and of
            ``num_heads``.
        depth: number of adaLN-Zero blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``hidden_size``.
        num_classes: number of class labels; 0 makes the model unconditional. Conditional models
            reserve index ``num_classes`` for the null class used by classifier-free guidance.
        class_dropout_prob: probability, during training, of replacing a label with the null class.
        frequency_embedding_size: width of the sinusoidal timestep features.
    """

    input_size: int
    in_channels: int
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 0
    class_dropout_prob: float = 0.1
    frequency_embedding_size: int = 256

    def __post_init__(self) -> None:
        for name in ("input_size", "in_channels", "hidden_size", "depth", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SiTConfig.{name} must be a positive int, got {value!r}")
        if self.patch_size not in _PATCH_SIZES:
            raise ValueError(
                f"SiTConfig.patch_size must be one of {_PATCH_SIZES}, got {self.patch_size!r}"
            )
        if self.input_size % self.patch_size != 0:
            raise ValueError(
                f"input_size={self.input_size} is not divisible by patch_size={self.patch_size}; "
                "choose a patch size that divides the latent's spatial size"
            )
        if self.hidden_size % 4 != 0:
            raise ValueError(f"hidden_size must be a multiple of 4, got {self.hidden_size}")
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 0
        ):
            raise ValueError(f"num_classes must be an int >= 0, got {self.num_classes!r}")
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(
                f"class_dropout_prob must be in [0, 1), got {self.class_dropout_prob!r}"
            )
        if self.frequency_embedding_size < 2 or self.frequency_embedding_size % 2:
            raise ValueError(
                f"frequency_embedding_size must be an even int >= 2, got {self.frequency_embedding_size!r}"
            )

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        input_size: int,
        in_channels: int,
        patch_size: int = 2,
        **overrides: Any,
    ) -> SiTConfig:
        """Config of a named size from :data:`SIT_SIZES` (``"tiny"``, ``"S"``, ``"B"``, ``"L"``,
        ``"XL"``); ``overrides`` replace any other field (``num_classes=1000``, ``depth=2``...)."""
        if name not in SIT_SIZES:
            raise ValueError(f"unknown SiT size {name!r}; choose one of {sorted(SIT_SIZES)}")
        depth, hidden, heads = SIT_SIZES[name]
        fields = {"depth": depth, "hidden_size": hidden, "num_heads": heads}
        fields.update(overrides)
        return cls(input_size=input_size, in_channels=in_channels, patch_size=patch_size, **fields)

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SiTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SiTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


class LatentNormalizer(nn.Module):
    """Per-channel affine normalisation of latents, fitted once from data.

    ``normalize(z) = (z - mean) / std`` per channel. ``mean`` and ``std`` are buffers of shape
    ``(C,)``, so they travel with the probe's ``state_dict`` and de-normalise its samples.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(num_channels))
        self.register_buffer("std", torch.ones(num_channels))

    @property
    def num_channels(self) -> int:
        return self.mean.numel()

    def _check(self, z: Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.num_channels:
            raise ValueError(
                f"expected latents of shape (N, {self.num_channels}, H, W), got {tuple(z.shape)}"
            )

    @torch.no_grad()
    def fit(self, latents: Tensor, chunk_size: int = 4096) -> LatentNormalizer:
        """Set ``mean``/``std`` to the per-channel statistics of ``latents`` ``(N, C, H, W)``.

        Statistics are accumulated in float64 over chunks of ``chunk_size`` samples, so a
        memory-mapped array wrapped by ``torch.from_numpy`` is never copied whole. Raises
        ``ValueError`` (state unchanged) on a wrong shape, an empty set or non-finite values.
        """
        self._check(latents)
        if latents.shape[0] == 0:
            raise ValueError("cannot fit a LatentNormalizer on zero latents")
        c = self.num_channels
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        count = 0
        for start in range(0, latents.shape[0], chunk_size):
            chunk = latents[start : start + chunk_size].to("cpu", torch.float64)
            if not torch.isfinite(chunk).all():
                raise ValueError(
                    "latents contain NaN or Inf; fix the encoder output before fitting"
                )
            total += chunk.sum(dim=(0, 2, 3))
            total_sq += chunk.square().sum(dim=(0, 2, 3))
            count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0.0)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(var.sqrt().clamp_min(self.eps).to(self.std.dtype))
        return self

    def normalize(self, z: Tensor) -> Tensor:
        """``(z - mean) / std`` per channel; ``z`` is ``(N, C, H, W)``."""
        self._check(z)
        return (z - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def denormalize(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`."""
        self._check(z)
        return z * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features ``(B, dim)`` of times ``t`` ``(B,)`` in ``[0, 1]``.

    ``t`` is scaled by 1000 first, so the frequencies span the same range as for DDPM-style
    integer timesteps (``t`` in [0, 1] fed directly would use only the lowest frequencies).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = (1000.0 * t.float())[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.reshape(-1)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding ``(grid_size**2, dim)``, row-major over the grid.

    Half of the channels encode the row, half the column (``dim`` must be a multiple of 4).
    """
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, rows), _sincos_1d(dim // 2, cols)], dim=1)
    return emb.float()


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """Transformer block with adaLN-Zero conditioning (shift/scale/gate for attention and MLP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift1, scale1))
        x = x + gate2.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x


class _FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm(x), shift, scale))


class SiT(nn.Module):
    """Scalable interpolant transformer predicting the velocity ``v = eps - x`` on latents.

    Operates on *normalised* latents (see :attr:`normalizer`, fitted by the trainer); the model
    outputs exactly zero at initialisation (adaLN-Zero and a zero final layer).

    Args:
        config: the architecture; see :class:`SiTConfig`.
    """

    pos_embed: Tensor

    def __init__(self, config: SiTConfig) -> None:
        super().__init__()
        self.config = config
        c, p, d = config.in_channels, config.patch_size, config.hidden_size
        self.normalizer = LatentNormalizer(c)
        self.x_embedder = nn.Conv2d(c, d, kernel_size=p, stride=p)
        # Fixed, deterministic from the config: kept out of the state_dict.
        self.register_buffer(
            "pos_embed",
            sincos_pos_embed_2d(d, config.input_size // p).unsqueeze(0),
            persistent=False,
        )
        self.t_embedder = nn.Sequential(
            nn.Linear(config.frequency_embedding_size, d), nn.SiLU(), nn.Linear(d, d)
        )
        self.y_embedder = (
            nn.Embedding(config.num_classes + 1, d) if config.num_classes > 0 else None
        )
        self.blocks = nn.ModuleList(
            _Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.final_layer = _FinalLayer(d, p * p * c)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        # adaLN-Zero: every residual branch and the output start at exactly zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    @property
    def null_class(self) -> int:
        """Label index of the null (unconditional) class; ``num_classes``."""
        return self.config.num_classes

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one latent."""
        cfg = self.config
        return (cfg.in_channels, cfg.input_size, cfg.input_size)

    def _unpatchify(self, x: Tensor) -> Tensor:
        cfg = self.config
        p, c, g = cfg.patch_size, cfg.in_channels, cfg.input_size // cfg.patch_size
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    def _labels(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        if self.y_embedder is None:
            if y is not None:
                raise ValueError("this SiT is unconditional (num_classes=0); pass y=None")
            return None
        if y is None:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=device)
        if y.shape != (batch,) or y.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.uint8,
        ):
            raise ValueError(
                f"y must be an integer tensor of shape ({batch},), got {y.dtype} {tuple(y.shape)}"
            )
        return y.to(device=device, dtype=torch.long)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """Velocity prediction.

        Args:
            x: noisy normalised latents ``(B, C, H, W)`` at time ``t``.
            t: time in ``[0, 1]`` (1 = pure noise), a float or a tensor of shape ``()`` or ``(B,)``.
            y: integer labels ``(B,)`` in ``[0, num_classes]`` (``num_classes`` = null class) for a
                conditional model, where ``None`` means the null class; must be ``None`` for an
                unconditional model.

        Returns:
            velocity ``(B, C, H, W)``, same dtype as ``x``.
        """
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected x of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        b = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must be a scalar or of shape ({b},), got {tuple(t.shape)}")
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(timestep_embedding(t, cfg.frequency_embedding_size).to(h.dtype))
        labels = self._labels(y, b, x.device)
        if labels is not None:
            assert self.y_embedder is not None
            c = c + self.y_embedder(labels)
        for block in self.blocks:
            h = block(h, c)
        return self._unpatchify(self.final_layer(h, c))

    def forward_with_cfg(self, x: Tensor, t: Tensor | float, y: Tensor, cfg_scale: float) -> Tensor:
        """Classifier-free guided velocity ``v_null + cfg_scale * (v_y - v_null)`` on all channels.

        ``cfg_scale == 1`` returns the conditional prediction ``forward(x, t, y)`` directly.
        Conditional and null predictions are computed in one doubled batch.
        """
        if self.y_embedder is None:
            raise ValueError("classifier-free guidance needs a conditional SiT (num_classes > 0)")
        if cfg_scale == 1.0:
            return self.forward(x, t, y)
        b = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        labels = self._labels(y, b, x.device)
        assert labels is not None
        null = torch.full_like(labels, self.null_class)
        out = self.forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = out.chunk(2)
        return uncond + cfg_scale * (cond - uncond)
