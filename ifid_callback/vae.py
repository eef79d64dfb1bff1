"""Drive any VAE through two calls: images -> latents and latents -> images."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

EncodeFn = Callable[[Tensor], Any]
DecodeFn = Callable[[Tensor], Any]


@contextlib.contextmanager
def eval_mode(
    modules: Sequence[torch.nn.Module], quiet: Callable[[], Any] | None = None
) -> Iterator[None]:
    """Every sub-module of ``modules`` in eval mode, its own mode restored afterwards.

    ``quiet``: a context-manager factory entered as well (the monitor silences its hooks).
    """
    modes = [(m, m.training) for root in modules for m in root.modules()]
    with quiet() if quiet is not None else contextlib.nullcontext():
        try:
            for module, _ in modes:
                module.training = False
            yield
        finally:
            for module, mode in modes:
                module.training = mode


class VAEAdapter:
    """Uniform ``encode``/``decode`` over diffusers-style VAEs and plain callables.

    Encoder outputs understood: a tensor; a posterior with ``mean``/``mode()``/``sample()``
    (diffusers' ``DiagonalGaussianDistribution``); an output object with ``latent_dist``
    (AutoencoderKL), ``latents`` (AutoencoderTiny, VQModel) or ``latent`` (AutoencoderDC); or a
    tuple whose first item is one of these. Decoder outputs: a tensor, an object with ``sample``
    (diffusers' ``DecoderOutput``) or a tuple whose first item is the images.

    Latents are used as the VAE returns them, without ``scaling_factor``/``shift_factor``: nearest
    neighbours and interpolation are defined on the raw latent space. An encoder that returns the
    raw moments (mean and log-variance concatenated: twice the channels the decoder takes) gets a
    ValueError at the first decode saying how to return a posterior or the mean instead.

    The VAE runs in eval mode during each call, and each sub-module's mode is restored afterwards.
    Dropout, batch statistics and training-only latent noise never enter a measurement, and a
    measurement never updates BatchNorm running statistics, even when it is called mid-training on
    a model in train mode. This needs the modules to be visible: the VAE itself, or bound methods
    of a module as ``encoder``/``decoder``.

    Inputs are cast to the dtype of the VAE's weights (found on the VAE or on the modules behind
    the callables); from half-precision (fp16/bf16) VAEs latents and decoded images come back as
    float32, so search, interpolation and features run in full precision.

    Args:
        vae: an object with ``encode`` and ``decode`` methods (e.g. ``diffusers.AutoencoderKL``).
        encoder, decoder: callables used instead of (or to override) the VAE's methods.
        sample_posterior: draw ``z ~ q(z|x)`` instead of taking the posterior mean.
    """

    def __init__(
        self,
        vae: Any = None,
        encoder: EncodeFn | None = None,
        decoder: DecodeFn | None = None,
        sample_posterior: bool = False,
    ) -> None:
        if vae is not None:
            missing = [m for m in ("encode", "decode") if not callable(getattr(vae, m, None))]
            if missing and (
                ("encode" in missing and encoder is None)
                or ("decode" in missing and decoder is None)
            ):
                raise TypeError(
                    f"vae={type(vae).__name__} has no callable {' / '.join(missing)}; pass an object "
                    "with encode(images) and decode(latents) (e.g. diffusers.AutoencoderKL), or "
                    "encoder=... and decoder=... callables."
                )
            encoder = encoder if encoder is not None else vae.encode
            decoder = decoder if decoder is not None else vae.decode
        if encoder is None or decoder is None:
            raise TypeError(
                "Pass either vae=<object with encode/decode> or both encoder= and decoder= callables."
            )
        if not callable(encoder) or not callable(decoder):
            raise TypeError(
                "encoder and decoder must be callable (images -> latents, latents -> images)."
            )
        self.vae = vae
        self._encoder = encoder
        self._decoder = decoder
        self.sample_posterior = bool(sample_posterior)

    @property
    def dtype(self) -> torch.dtype | None:
        """Floating dtype of the VAE's weights, or None when no module is visible."""
        for module in self.modules():
            dtype = module_dtype(module)
            if dtype is not None:
                return dtype
        return None

    def modules(self) -> list[torch.nn.Module]:
        """The nn.Modules behind the callables (for device and dtype checks and eval mode)."""
        found = []
        for obj in (
            self.vae,
            self._encoder,
            self._decoder,
            getattr(self._encoder, "__self__", None),
        ):
            if isinstance(obj, torch.nn.Module) and all(obj is not m for m in found):
                found.append(obj)
        return found

    def device(self) -> torch.device | None:
        """Device of the first parameter of the VAE's modules, or None when unknown."""
        for module in self.modules():
            for p in module.parameters():
                return p.device
        return None

    def encode(
        self, images: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None = None
    ) -> Tensor:
        """Images (B, C, H, W) -> latents (B, ...) (posterior mean unless ``sample_posterior``);
        float32 latents from a half-precision VAE.

        Args:
            images: (B, C, H, W) images.
            generator: for ``sample_posterior``: one generator for the batch (passed to the
                posterior's ``sample``), or B generators, one per image: image i's latent is then
                ``mean_i + std_i * eps_i`` with ``eps_i`` drawn from generator i alone, so it does
                not depend on the batch the image is in (needs a posterior with ``.mean`` and
                ``.std`` or ``.stddev``).
        """
        dtype, half = self.dtype, _half(self.dtype)
        with eval_mode(self.modules()):
            out = _run("encoder", self._encoder, images.to(dtype) if dtype is not None else images)
            z = self._latents_from(out, generator)
        return z.float() if half and isinstance(z, Tensor) and z.dtype == half else z

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, ...) -> images (B, C, H, W); float32 images from a half-precision VAE."""
        dtype = self.dtype
        with eval_mode(self.modules()):
            try:
                out = _run(
                    "decoder", self._decoder, latents.to(dtype) if dtype is not None else latents
                )
            except RuntimeError as exc:
                moments = _moments_error(latents, exc)
                if moments is not None:
                    raise moments from exc
                raise
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = getattr(out, "sample", out)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"The decoder returned {type(out).__name__}; expected a tensor or an object with a "
                "`.sample` tensor (diffusers DecoderOutput)."
            )
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    def _latents_from(self, out: Any, generator: torch.Generator | None) -> Tensor:
        if isinstance(out, (tuple, list)):
            out = out[0]
        for attr in ("latent_dist", "latents", "latent"):
            if hasattr(out, attr) and not isinstance(out, Tensor):
                out = getattr(out, attr)
                break
        if isinstance(out, Tensor):
            return out
        if hasattr(out, "mean") and hasattr(out, "sample"):  # a Gaussian posterior
            if not self.sample_posterior:
                return out.mean
            if generator is not None and not isinstance(generator, torch.Generator):
                return _sample_per_image(out, list(generator))
            return (
                out.sample(generator=generator) if _accepts_generator(out.sample) else out.sample()
            )
        raise TypeError(
            f"Cannot read latents from the encoder output of type {type(out).__name__}; return a "
            "tensor, a posterior with .mean/.sample(), or an object with .latent_dist / .latents / "
            ".latent, or pass encoder=<callable returning a tensor>."
        )


def _sample_per_image(posterior: Any, generators: list[torch.Generator]) -> Tensor:
    """mean + std * eps with each image's eps drawn from its own generator (on the CPU)."""
    mean = posterior.mean
    std = getattr(posterior, "std", None)
    if not isinstance(std, Tensor):
        std = getattr(posterior, "stddev", None)
    if not isinstance(mean, Tensor) or not isinstance(std, Tensor):
        raise TypeError(
            f"sample_posterior=True draws each image's sample itself and needs a posterior with "
            f".mean and .std (or .stddev) tensors; {type(posterior).__name__} has none. Return "
            "such a posterior (e.g. diffusers' DiagonalGaussianDistribution), or sample inside "
            "your encoder and leave sample_posterior=False."
        )
    if len(generators) != mean.shape[0]:
        raise ValueError(f"got {len(generators)} generators for {mean.shape[0]} images.")
    work = torch.float64 if mean.dtype == torch.float64 else torch.float32
    eps = torch.stack([torch.randn(mean.shape[1:], generator=g, dtype=work) for g in generators])
    return mean.to(work) + std.to(work) * eps.to(mean.device)


def module_dtype(module: Any) -> torch.dtype | None:
    """Floating dtype of a module's first floating parameter, or None (no module, no weights)."""
    if not isinstance(module, torch.nn.Module):
        return None
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


# How torch words a clash between an input's dtype and a module's weights.
_DTYPE_CLASH = (
    "should be the same",
    "expected scalar type",
    "must have the same dtype",
    "expected both",
    "expected mat1 and mat2",
)


# How torch words an input whose channels a decoder's first layer does not take: convolutions
# (channels taken, channels got) and linear layers on (B, C) latents (got, taken).
_CONV_CHANNELS = re.compile(r"to have (\d+) channels, but got (\d+) channels")
_LINEAR_CHANNELS = re.compile(
    r"mat1 and mat2 shapes cannot be multiplied \(\d+x(\d+) and (\d+)x\d+\)"
)


def _moments_error(latents: Tensor, exc: RuntimeError) -> ValueError | None:
    """The error to raise instead of ``exc`` when the decoder failed because the latents have
    twice the channels it takes (the encoder returned the moments, not a latent), else None."""
    text = str(exc)
    conv, linear = _CONV_CHANNELS.search(text), _LINEAR_CHANNELS.search(text)
    if conv is not None:
        takes, got = int(conv[1]), int(conv[2])
    elif linear is not None and latents.ndim == 2:
        got, takes = int(linear[1]), int(linear[2])
    else:
        return None
    if latents.ndim < 2 or latents.shape[1] != got or got != 2 * takes:
        return None
    return ValueError(
        f"The encoder returned latents with {got} channels but the decoder takes {takes}: "
        f"{got} = 2 x {takes} looks like the moments of the posterior (mean and log-variance "
        "concatenated along channels, as a VAE's `encoder` followed by `quant_conv` gives them), "
        "not a latent. Make the encoder return a posterior, e.g. diffusers' "
        "`DiagonalGaussianDistribution(moments)` (the metric takes its mean, or samples it with "
        "sample_posterior=True), or the mean alone: `moments.chunk(2, dim=1)[0]`."
    )


def _half(dtype: torch.dtype | None) -> torch.dtype | None:
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


def _run(what: str, fn: Callable[[Tensor], Any], x: Tensor) -> Any:
    """Call the encoder/decoder; a dtype clash it cannot see coming gets a message with the fix."""
    try:
        return fn(x)
    except RuntimeError as exc:
        text = str(exc)
        if any(sign in text for sign in _DTYPE_CLASH):
            raise TypeError(
                f"The {what} got {x.dtype} input but computes in another dtype ({text}). Pass "
                "vae=<the nn.Module> (or callables bound to it) so the metric can see its weights "
                "and cast images in and latents/images out, or cast inside your callable."
            ) from exc
        raise


def _accepts_generator(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        return "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
