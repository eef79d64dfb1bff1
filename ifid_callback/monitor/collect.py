"""Collecting training latents into the bank: from step outputs, forward hooks or re-encoding."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.bank import LatentBank
from ifid_callback.diffusers_vae import latent_hook_point

__all__ = ["LATENT_SOURCES", "LatentCollector"]

LATENT_SOURCES = ("outputs", "hook", "encode")
_IMAGE_KEYS = ("pixel_values", "images", "image", "x")


class LatentCollector:
    """Owns the latent bank (and, for ``exact_bank``, the images behind its rows) and fills it.

    Latents arrive as ``latent_source`` says (see :class:`~ifid_callback.monitor.IFIDMonitor`):
    handed over, caught by forward hooks registered with :meth:`attach`, or re-encoded from a
    fraction of each batch. Hooks collect only while the hooked module trains and the collector is
    not :meth:`quiet` (the monitor running the VAE itself).
    """

    def __init__(
        self,
        *,
        latent_source: str,
        outputs_key: str,
        encoder_module: nn.Module | None,
        hook_transform: Callable[[Any], Tensor] | None,
        encode_fraction: float,
        exact_bank: bool,
        capacity: int,
        dtype: str,
        device: torch.device | None,
        vae: Any,
    ) -> None:
        if latent_source not in LATENT_SOURCES:
            raise ValueError(
                f"latent_source must be one of {LATENT_SOURCES}, got {latent_source!r}: "
                "'outputs' reads the training step's outputs, 'hook' hooks the encoder module, "
                "'encode' re-encodes part of each batch."
            )
        if not 0.0 < float(encode_fraction) <= 1.0:
            raise ValueError(f"encode_fraction must lie in (0, 1], got {encode_fraction}.")
        if not isinstance(outputs_key, str) or not outputs_key:
            raise ValueError(f"outputs_key must be a non-empty string, got {outputs_key!r}.")
        if encoder_module is not None and not isinstance(encoder_module, nn.Module):
            raise TypeError(
                f"encoder_module must be an nn.Module, got {type(encoder_module).__name__}."
            )
        self.latent_source = latent_source
        self.outputs_key = outputs_key
        self.encoder_module = encoder_module
        self.hook_transform = hook_transform
        self.encode_fraction = float(encode_fraction)
        self.exact_bank = bool(exact_bank)
        self.capacity = capacity
        self.dtype = dtype
        self.pinned_device = device  # None: the bank follows the latents / the VAE
        self.vae = vae
        self.bank = self.new_bank(device or "cpu")
        # exact_bank: the images behind the bank rows, in a ring of the same capacity and ids.
        self.sources = self.new_bank(device or "cpu") if self.exact_bank else None
        self._busy = False
        self._captured: list[Tensor] = []
        self._captured_images: list[Tensor] = []
        self._hooks: list[Any] = []

    def new_bank(self, device: torch.device | str) -> LatentBank:
        return LatentBank(self.capacity, dtype=self.dtype, device=device)

    # ------------------------------------------------------------------ hooks
    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Hooks collect nothing inside (the monitor runs the VAE itself)."""
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def attach(self, model: nn.Module | None = None) -> None:
        """Register the forward hooks of ``latent_source`` (see :meth:`IFIDMonitor.attach`)."""
        self.detach()
        if self.latent_source == "hook":
            module, transform = self._hook_target()
            self._hooks.append(module.register_forward_hook(self._output_hook(transform)))
            return
        if model is None:
            raise ValueError(
                f"attach(model) needs the model whose forward returns the training outputs "
                f"(latent_source={self.latent_source!r})."
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if self.latent_source == "outputs":
            self._hooks.append(model.register_forward_hook(self._output_hook(self.read_key)))
        else:
            self._hooks.append(
                model.register_forward_pre_hook(self._images_pre_hook, with_kwargs=True)
            )

    def detach(self) -> None:
        """Remove the hooks and drop anything they collected."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self.drop_captured()

    def drop_captured(self) -> None:
        self._captured, self._captured_images = [], []

    def _hook_target(self) -> tuple[nn.Module, Callable[[Any], Tensor]]:
        if self.encoder_module is not None:
            return self.encoder_module, self.hook_transform or first_tensor
        if self.vae is None:
            raise ValueError(
                "latent_source='hook' needs encoder_module=<the nn.Module whose output is the "
                "latents> when no vae= is given."
            )
        module, transform = latent_hook_point(self.vae)
        return module, self.hook_transform or transform

    def _output_hook(self, transform: Callable[[Any], Tensor]) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._busy or not module.training:
                return
            latents = transform(output)
            if isinstance(latents, Tensor):
                self._captured.append(latents.detach())
                self._trim(self._captured)

        return hook

    def _images_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._busy or not module.training:
            return
        images = next((kwargs[k] for k in _IMAGE_KEYS if isinstance(kwargs.get(k), Tensor)), None)
        if images is None:
            images = next((a for a in args if isinstance(a, Tensor)), None)
        if images is not None and images.ndim == 4:
            self._captured_images.append(images.detach())
            self._trim(self._captured_images)

    def _trim(self, captured: list[Tensor]) -> None:
        # Nobody called observe(): keep at most a bank's worth of rows.
        while len(captured) > 1 and sum(t.shape[0] for t in captured[1:]) >= self.capacity:
            captured.pop(0)

    def read_key(self, outputs: Any) -> Tensor:
        """``outputs[outputs_key]`` (or the attribute); the error lists what ``outputs`` has."""
        key = self.outputs_key
        if isinstance(outputs, Mapping):
            if key in outputs:
                return outputs[key]
            available = sorted(str(k) for k in outputs.keys())
        elif hasattr(outputs, key):
            return getattr(outputs, key)
        else:
            available = sorted(k for k in dir(outputs) if not k.startswith("_"))[:20]
        raise KeyError(
            f"The training step's outputs have no {key!r} entry (available: {available}). Return "
            f"the latents under {key!r} (e.g. {{'loss': loss, {key!r}: posterior.mean.detach()}}), "
            "set outputs_key=, or use latent_source='hook' or 'encode'."
        )

    # ------------------------------------------------------------------ one training step
    def gather(
        self,
        latents: Tensor | None,
        images: Tensor | None,
        outputs: Any,
        encode_subsample: Callable[[Tensor], tuple[Tensor, Tensor]],
        check_shape: Callable[[tuple[int, ...]], None],
    ) -> tuple[Tensor, Tensor | None]:
        """The step's latents (and images for ``exact_bank``), from the arguments or the hooks.

        ``encode_subsample(images) -> (latents, images)`` re-encodes part of a batch;
        ``check_shape(per-image latent shape)`` raises on latents unlike the evaluation's.
        """
        if latents is None and outputs is not None:
            latents = self.read_key(outputs)
        captured = False
        if latents is None and self.latent_source in ("hook", "outputs") and self._captured:
            latents, self._captured, captured = torch.cat(self._captured), [], True
        if images is None and self._captured_images:
            images = torch.cat(self._captured_images)
        self._captured_images = []
        if latents is None:
            if self.latent_source == "encode" and images is not None:
                latents, images = encode_subsample(images)
            elif self.latent_source == "hook":
                raise ValueError(
                    "No latents were collected since the last step: the hooked encoder module "
                    "did not run in training mode. Call attach() before training and check "
                    "encoder_module, or pass observe(latents=...)."
                )
            else:
                raise ValueError(
                    f"observe() got nothing to insert: pass latents=, outputs= (with "
                    f"{self.outputs_key!r}) or, for latent_source='encode', images=."
                )
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents must be a tensor, got {type(latents).__name__}.")
        latents = latents.detach()
        if latents.ndim >= 2:
            check_shape(tuple(latents.shape[1:]))
        if self.exact_bank:
            if images is None or images.shape[0] != latents.shape[0]:
                got = "none" if images is None else f"{images.shape[0]}"
                raise ValueError(
                    f"exact_bank=True keeps the source image of every bank row: pass "
                    f"observe(images=...) with one image per latent ({latents.shape[0]}), got "
                    f"{got}."
                )
            if captured:
                raise ValueError("exact_bank=True cannot pair hooked latents with images.")
        return latents, images

    def subsample_size(self, batch: int) -> int:
        """How many of a batch of ``batch`` images ``latent_source="encode"`` re-encodes."""
        return max(1, math.ceil(self.encode_fraction * batch))

    def insert(self, latents: Tensor, images: Tensor | None, step: int | None = None) -> None:
        """Add the step's latents (and their source images with ``exact_bank``) to the bank,
        recorded as inserted at training step ``step``."""
        if self.pinned_device is None and self.bank.device != latents.device:
            # Keep the bank where the latents are made: no device copy per step.
            self.move(latents.device)
        ids = self.bank.add(latents.to(self.bank.device), step=step)
        if self.sources is not None:
            self.sources.add(images.detach().to(self.sources.device), ids=ids)

    # ------------------------------------------------------------------ placement
    def follow(self, device: torch.device) -> None:
        """Move the banks to ``device`` unless a bank device was pinned."""
        target = self.pinned_device or device
        if self.bank.device != target:
            self.move(target)

    def move(self, device: torch.device) -> None:
        state = self.bank.state_dict()
        self.bank = self.new_bank(device)
        self.bank.load_state_dict(state)
        if self.sources is not None:
            src = self.sources.state_dict()
            self.sources = self.new_bank(device)
            self.sources.load_state_dict(src)

    # ------------------------------------------------------------------ exact bank
    def refill(
        self,
        encode: Callable[[Tensor, Tensor], Tensor],
        batch_size: int,
        device: Any,
        step: int | None = None,
    ) -> None:
        """Re-encode the bank's source images (``exact_bank``): ``encode(images, ids)``; the new
        rows count as inserted at ``step`` (they hold the current weights' encodes)."""
        state = self.sources.state_dict()  # rows in insertion order
        ids = state["ids"]
        images = state["vectors"].reshape(len(ids), *state["latent_shape"])
        parts = []
        for chunk, chunk_ids in zip(images.split(batch_size), ids.split(batch_size)):
            chunk = chunk.to(device, torch.float32)
            parts.append(encode(chunk, chunk_ids).detach().to(self.bank.device))
        # clear() keeps the id counter, so automatic ids stay unique after the refill.
        self.bank.clear()
        self.bank.add(torch.cat(parts), ids=ids, step=step)


def first_tensor(output: Any) -> Tensor:
    """The latents in a hooked module's output: a tensor, its first item, a posterior's mean."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    for attr in ("latent_dist", "latents", "latent"):
        if hasattr(output, attr) and not isinstance(output, Tensor):
            output = getattr(output, attr)
            break
    if not isinstance(output, Tensor) and hasattr(output, "mean"):
        output = output.mean
    if not isinstance(output, Tensor):
        raise TypeError(
            f"The hooked module returned {type(output).__name__}; pass hook_transform=<callable "
            "output -> latents tensor>."
        )
    return output
