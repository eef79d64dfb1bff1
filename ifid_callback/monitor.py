"""Framework-neutral scheduling of iFID during VAE training: latent bank, index refresh, evaluation."""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.bank import LatentBank
from ifid_callback.diffusers_vae import latent_hook_point
from ifid_callback.distributed import all_reduce_int, all_reduce_sum, world_and_rank
from ifid_callback.evaluate import images_of
from ifid_callback.functional.interpolation import interpolate
from ifid_callback.grid import image_grid
from ifid_callback.metric import InterpolatedFID
from ifid_callback.randomness import keyed_generators

__all__ = ["LATENT_SOURCES", "IFIDMonitor"]

LATENT_SOURCES = ("outputs", "hook", "encode")
_STATE_FORMAT = 1
_IMAGE_KEYS = ("pixel_values", "images", "image", "x")


class IFIDMonitor:
    """Keeps a rolling bank of training latents and evaluates iFID/rFID on a fixed image set.

    Between evaluations the monitor only inserts latents into a :class:`LatentBank` (and, every
    ``refresh_every_n_steps`` steps, rebuilds the neighbour index from it); an evaluation encodes
    the fixed evaluation set, finds each latent's nearest neighbour in the bank, decodes
    interpolants and reconstructions and returns ``{"ifid", "rfid", ...}``. Real-image statistics
    of the evaluation set are computed on the first evaluation and cached (also in
    :meth:`state_dict`). Framework adapters (``ifid_callback.integrations``) only translate hooks,
    logging and checkpointing to the calls below.

    Latents reach the bank in one of three ways (``latent_source``):

    * ``"outputs"``: what the training step already computed, passed as ``observe(latents=...)``
      or read from ``observe(outputs=...)[outputs_key]`` (a dict or an object attribute), or from
      the model's forward output once :meth:`attach` hooked the model. Free.
    * ``"hook"``: a forward hook on ``encoder_module`` (default: found from the VAE, see
      :func:`~ifid_callback.diffusers_vae.latent_hook_point`) collects its output during
      training forwards; ``hook_transform`` maps the output to latents. Free.
    * ``"encode"``: a fraction ``encode_fraction`` of each training batch
      (``observe(images=...)``, or captured by :meth:`attach`) is re-encoded under no_grad with
      the VAE in eval mode. Costs one partial encoder pass per step.

    Staleness: the bank holds the latents of the last ``bank_capacity`` training images, computed
    by the encoder as it was then. ``exact_bank=True`` also keeps those images and re-encodes them
    with the current encoder at each index refresh (memory: one image per bank row).

    Distributed (torch.distributed initialised): each rank keeps its own bank; at refresh the
    banks are gathered (a collective: every rank must call :meth:`refresh_index`,
    :meth:`evaluate` and :meth:`maybe_evaluate` at the same steps); an evaluation gives each rank
    every ``world_size``-th evaluation image and the metric states are summed across ranks, so
    every rank returns the same numbers.

    Args:
        vae: object with ``encode``/``decode`` (e.g. ``diffusers.AutoencoderKL``,
            :class:`~ifid_callback.tiny_vae.TinyVAE`); fp16/bf16 VAEs get float32 images in and
            out. Or None with ``encoder``/``decoder``.
        encoder: callable images -> latents or posterior (overrides ``vae.encode``).
        decoder: callable latents -> images (overrides ``vae.decode``).
        eval_images: the evaluation images, a (N, C, H, W) tensor in ``input_range`` or a
            Dataset whose items are images or (image, ...) tuples or dicts with ``pixel_values``.
            Use held-out images: an evaluation image whose latent is in the bank is its own
            nearest neighbour. Checked at construction with one encode/decode round trip (channels,
            channels-last, size the VAE reproduces) and against the first training latents
            (evaluation images of another size than the training images are refused).
        num_eval_images: how many of them to use, chosen once with ``seed`` (default: all).
            At least 2; fewer than the feature dimension gives a rank-deficient covariance and a
            warning (the standard Inception features are 2048-d).
        eval_batch_size: images per encode/decode/feature call during evaluation.
        bank_capacity: rows kept in the bank (the last ``bank_capacity`` training latents).
        bank_dtype: bank storage, ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        bank_device: where the bank lives and is searched (default: the VAE's device).
        refresh_every_n_steps: rebuild the neighbour index every this many steps (amortises
            approximate-index builds and exact-bank re-encoding). None (default): rebuild at each
            evaluation, so every evaluation searches the current bank.
        eval_every_n_steps: :meth:`maybe_evaluate` evaluates when this many steps passed since the
            last evaluation. None: only on request (framework adapters evaluate at each of their
            validation/evaluation phases).
        latent_source: ``"outputs"``, ``"hook"`` or ``"encode"`` (see above).
        outputs_key: key (or attribute) of the training step's outputs that holds the latents.
        encoder_module: module hooked for ``latent_source="hook"``.
        hook_transform: maps the hooked module's output to latents (default: the output itself,
            or the posterior mean of a moments tensor for VAEs found automatically).
        encode_fraction: fraction in (0, 1] of each batch re-encoded for ``"encode"``.
        exact_bank: keep the bank's source images and re-encode them at each index refresh.
        feature: ``"inception"`` or an ``nn.Module`` mapping images to (B, d) features.
        interpolation, alpha, k, pick, index, distance, sample_posterior, search_norm: as in
            :class:`~ifid_callback.metric.InterpolatedFID`.
        input_range: (low, high) value range of the images.
        seed: seeds the evaluation subset, the metric's random choices and the subsampling.
        grid_rows: rows (evaluation images) in :meth:`render_grid`.
        device: where the metric runs (default: the VAE's device, followed when it moves).

    Example:
        >>> monitor = IFIDMonitor(vae, eval_images=val_images, eval_every_n_steps=1000)  # doctest: +SKIP
        >>> for step, batch in enumerate(loader, 1):                                     # doctest: +SKIP
        ...     out = vae_loss(batch); out["loss"].backward(); opt.step()
        ...     monitor.observe(latents=out["latents"], step=step)
        ...     if (metrics := monitor.maybe_evaluate(step)) is not None:
        ...         print(metrics["ifid"], metrics["rfid"])
    """

    def __init__(
        self,
        vae: Any = None,
        encoder: Callable[[Tensor], Any] | None = None,
        decoder: Callable[[Tensor], Any] | None = None,
        *,
        eval_images: Tensor | torch.utils.data.Dataset,
        num_eval_images: int | None = None,
        eval_batch_size: int = 32,
        bank_capacity: int = 10_000,
        bank_dtype: str = "fp32",
        bank_device: torch.device | str | None = None,
        refresh_every_n_steps: int | None = None,
        eval_every_n_steps: int | None = None,
        latent_source: str = "outputs",
        outputs_key: str = "latents",
        encoder_module: nn.Module | None = None,
        hook_transform: Callable[[Any], Tensor] | None = None,
        encode_fraction: float = 0.25,
        exact_bank: bool = False,
        feature: str | nn.Module = "inception",
        interpolation: str = "slerp",
        alpha: float = 0.5,
        k: int = 1,
        pick: str = "uniform",
        index: str = "auto",
        distance: str | None = None,
        sample_posterior: bool = False,
        search_norm: str | None = None,
        input_range: tuple[float, float] = (-1.0, 1.0),
        seed: int = 0,
        grid_rows: int = 8,
        device: torch.device | str | None = None,
    ) -> None:
        if latent_source not in LATENT_SOURCES:
            raise ValueError(
                f"latent_source must be one of {LATENT_SOURCES}, got {latent_source!r}: "
                "'outputs' reads the training step's outputs, 'hook' hooks the encoder module, "
                "'encode' re-encodes part of each batch."
            )
        for name, value in (
            ("refresh_every_n_steps", refresh_every_n_steps),
            ("eval_every_n_steps", eval_every_n_steps),
        ):
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        for name, value in (
            ("bank_capacity", bank_capacity),
            ("eval_batch_size", eval_batch_size),
            ("grid_rows", grid_rows),
        ):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0.0 < float(encode_fraction) <= 1.0:
            raise ValueError(f"encode_fraction must lie in (0, 1], got {encode_fraction}.")
        if not isinstance(outputs_key, str) or not outputs_key:
            raise ValueError(f"outputs_key must be a non-empty string, got {outputs_key!r}.")
        if encoder_module is not None and not isinstance(encoder_module, nn.Module):
            raise TypeError(
                f"encoder_module must be an nn.Module, got {type(encoder_module).__name__}."
            )

        # Half-precision VAEs: the metric's VAEAdapter casts images in and latents/decodes out.
        self.metric = InterpolatedFID(
            encoder=encoder,
            decoder=decoder,
            vae=vae,
            feature=feature,
            interpolation=interpolation,
            alpha=alpha,
            k=k,
            pick=pick,
            bank=None,
            index=index,
            distance=distance,
            compute_rfid=True,
            input_range=input_range,
            sample_posterior=sample_posterior,
            search_norm=search_norm,
            reset_real_features=False,
            seed=seed,
            auto_refresh_index=False,
        )
        self.vae = vae
        self.input_range = self.metric.input_range
        self.seed = int(seed)
        self.eval_batch_size = eval_batch_size
        self.bank_capacity = bank_capacity
        self.bank_dtype = bank_dtype
        self.bank_device = torch.device(bank_device) if bank_device is not None else None
        self.refresh_every_n_steps = refresh_every_n_steps
        self.eval_every_n_steps = eval_every_n_steps
        self.latent_source = latent_source
        self.outputs_key = outputs_key
        self.encoder_module = encoder_module
        self.hook_transform = hook_transform
        self.encode_fraction = float(encode_fraction)
        self.exact_bank = bool(exact_bank)
        self.grid_rows = grid_rows
        self.device = torch.device(device) if device is not None else None

        self.bank = LatentBank(bank_capacity, dtype=bank_dtype, device=self.bank_device or "cpu")
        self.metric.bank = self.bank
        # exact_bank: the images behind the bank rows, in a ring of the same capacity and ids.
        self._sources = (
            LatentBank(bank_capacity, dtype=bank_dtype, device=self.bank_device or "cpu")
            if self.exact_bank
            else None
        )
        self._init_eval_set(eval_images, num_eval_images)

        # Counters (all in state_dict).
        self.step = 0
        self.steps_observed = 0
        self.last_refresh_step: int | None = None
        self.last_eval_step: int | None = None
        self.history: list[dict[str, float]] = []
        self._real_global: dict[str, Tensor] | None = None
        self._pending_real: dict[str, Tensor] | None = None

        self._index_rows = 0
        self._index_world = 1
        self._index_ready = False
        self._busy = False  # True while the monitor itself runs the VAE (hooks stay silent)
        self._captured: list[Tensor] = []
        self._captured_images: list[Tensor] = []
        self._hooks: list[Any] = []
        # What the VAE makes of the evaluation images, checked now rather than at the first
        # evaluation (thousands of steps later).
        self._eval_latent_shape = self._check_eval_images_fit_vae()

    # ------------------------------------------------------------------ evaluation set
    def _init_eval_set(self, eval_images: Any, num: int | None) -> None:
        if isinstance(eval_images, Tensor):
            total = eval_images.shape[0] if eval_images.ndim == 4 else -1
            if eval_images.ndim != 4:
                raise ValueError(
                    f"eval_images must be a (N, C, H, W) tensor, got shape "
                    f"{tuple(eval_images.shape)}."
                )
        elif isinstance(eval_images, torch.utils.data.Dataset) and hasattr(eval_images, "__len__"):
            total = len(eval_images)
        else:
            raise TypeError(
                "eval_images must be a (N, C, H, W) tensor or a sized torch Dataset of images, "
                f"got {type(eval_images).__name__}."
            )
        if num is None:
            num = total
        if not _is_int(num) or num < 2:
            raise ValueError(
                f"iFID needs at least 2 evaluation images (FID compares two covariances); got "
                f"num_eval_images={num!r} from an evaluation set of {total}. Pass more images."
            )
        if num > total:
            raise ValueError(
                f"num_eval_images={num} but eval_images holds only {total} images; lower "
                "num_eval_images or pass more images."
            )
        g = torch.Generator().manual_seed(self.seed)
        chosen = torch.randperm(total, generator=g)[:num] if num < total else torch.arange(total)
        self._eval_indices = chosen.sort().values
        self.num_eval_images = num
        if isinstance(eval_images, Tensor):
            self._eval_tensor: Tensor | None = eval_images[self._eval_indices].detach().cpu()
            self._eval_dataset = None
            first = self._eval_tensor[:1]
        else:
            self._eval_tensor = None
            self._eval_dataset = eval_images
            first = self._load_eval([int(self._eval_indices[0])])
        if not first.is_floating_point():
            raise TypeError(
                f"eval_images must be floating point in input_range={self.input_range}, got "
                f"{first.dtype}; convert uint8 images with images.float() / 127.5 - 1."
            )
        low, high = self.input_range
        check = self._eval_tensor if self._eval_tensor is not None else first
        lo, hi = float(check.min()), float(check.max())
        if lo < low - self.metric.range_tolerance or hi > high + self.metric.range_tolerance:
            raise ValueError(
                f"eval_images span [{lo:.4g}, {hi:.4g}] but input_range is {self.input_range}; "
                "rescale them (e.g. x * 2 - 1 for [0, 1] images) or set input_range."
            )
        self._eval_shape = tuple(first.shape[1:])
        self._probe_image = first[:1].clone()
        d = self.metric.num_features
        if num < d:
            warnings.warn(
                f"{num} evaluation images but the features are {d}-dimensional: the covariance "
                f"of the evaluation set has rank < {d}, so iFID/rFID are biased and noisier. Use "
                f"at least {d} evaluation images for numbers comparable with published FIDs.",
                UserWarning,
                stacklevel=3,
            )
        digest = hashlib.sha1(self._eval_indices.numpy().tobytes())
        digest.update(repr((total, self._eval_shape)).encode())
        digest.update(repr(round(float(check.double().sum()), 6)).encode())
        self._eval_fingerprint = digest.hexdigest()

    def _check_eval_images_fit_vae(self) -> tuple[int, ...]:
        """One encode/decode round trip of an evaluation image: does the VAE take these images?

        Runs at set-up under no_grad, with the VAE in eval mode, the hooks silent and the global
        random state untouched. Returns the per-image latent shape of the evaluation images.
        """
        shape = self._eval_shape
        device = self._vae_device()
        x = self._probe_image.to(device, torch.float32)
        cuda = [device] if device.type == "cuda" else []
        try:
            with self._eval_mode(), torch.no_grad(), torch.random.fork_rng(devices=cuda):
                gen = torch.Generator(device=device).manual_seed(0)
                z = self.metric.vae.encode(x, generator=gen)
                out = self.metric.vae.decode(z)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ValueError(self._eval_mismatch_message(exc)) from exc
        if not isinstance(z, Tensor) or z.ndim < 2:
            raise ValueError(
                f"The VAE's encoder returned {type(z).__name__} for an evaluation image; it must "
                "return latents (B, ...) or a posterior (see VAEAdapter)."
            )
        if tuple(out.shape[1:]) != shape:
            raise ValueError(
                f"The VAE turns evaluation images of shape {shape} (C, H, W) into reconstructions "
                f"of shape {tuple(out.shape[1:])}: their size is not one the VAE reproduces "
                "(e.g. not a multiple of its downsampling factor). Give evaluation images of the "
                "training images' size."
            )
        return tuple(z.shape[1:])

    def _eval_mismatch_message(self, exc: Exception) -> str:
        channels, height, width = (self._eval_shape + (0, 0, 0))[:3]
        full = (self.num_eval_images, *self._eval_shape)
        takes = _vae_in_channels(self.metric.vae.modules())
        if width in (1, 3, 4) and channels not in (1, 3, 4) and takes in (None, width):
            return (
                f"eval_images have shape {full}, which looks channels-last (N, H, W, C); the VAE "
                f"takes channels-first images (N, C, H, W): pass images.permute(0, 3, 1, 2)."
            )
        if takes is not None and channels != takes:
            if channels == 1:
                return (
                    f"eval_images are grayscale (1 channel, shape {full}) but the VAE takes "
                    f"{takes} channels: repeat the channel (images.repeat(1, {takes}, 1, 1)) or "
                    "give images like the training images."
                )
            return (
                f"eval_images have {channels} channels (shape {full}) but the VAE takes {takes} "
                "channels: give evaluation images like the training images (N, C, H, W)."
            )
        return (
            f"The VAE could not encode and decode an evaluation image of shape {self._eval_shape} "
            f"(C, H, W): {type(exc).__name__}: {exc}. Give evaluation images like the training "
            "images: (N, C, H, W), the same channels and size, in input_range."
        )

    def _check_training_latents(self, shape: tuple[int, ...]) -> None:
        """Training latents of ``shape`` (per image) must be comparable with the evaluation
        images' latents: otherwise the evaluation images are not like the training images, or
        the training step hands over something else than the VAE's latents."""
        ours = self._eval_latent_shape
        if math.prod(shape) == math.prod(ours):
            return
        size = f"{self._eval_shape[-2]}x{self._eval_shape[-1]}"
        start = (
            f"Training latents have shape {tuple(shape)} per image but the {size} evaluation "
            f"images encode to {ours}"
        )
        if len(shape) == len(ours) >= 3 and shape[0] == ours[0]:
            # Same latent channels, another latent map: the images differ in size.
            h = self._eval_shape[-2] * shape[-2] // max(ours[-2], 1)
            w = self._eval_shape[-1] * shape[-1] // max(ours[-1], 1)
            raise ValueError(
                f"{start}: the evaluation images are not the size of the training images (about "
                f"{h}x{w}). Give eval_images of the training images' size (resize or crop them)."
            )
        raise ValueError(
            f"{start}: the latents given to observe() are not what the VAE's encoder returns "
            "(e.g. moments instead of the posterior mean, or another latent layout), or the "
            "evaluation images differ from the training images. Hand over the encoder's "
            "latents (posterior.mean) and evaluation images like the training images."
        )

    def _load_eval(self, positions: list[int]) -> Tensor:
        items = []
        for i in positions:
            item = self._eval_dataset[i]
            if isinstance(item, Mapping) or isinstance(item, (tuple, list)):
                item = images_of(item)
            if not isinstance(item, Tensor) or item.ndim != 3:
                raise TypeError(
                    f"eval_images[{i}] gave {type(item).__name__}"
                    f"{tuple(item.shape) if isinstance(item, Tensor) else ''}; items must be "
                    "(C, H, W) image tensors, or tuples/dicts holding one."
                )
            items.append(item)
        return torch.stack(items)

    def _eval_batches(self, rank: int = 0, world: int = 1) -> Iterator[Tensor]:
        positions = list(range(rank, self.num_eval_images, world))
        for start in range(0, len(positions), self.eval_batch_size):
            part = positions[start : start + self.eval_batch_size]
            if self._eval_tensor is not None:
                yield self._eval_tensor[part]
            else:
                yield self._load_eval([int(self._eval_indices[p]) for p in part])

    # ------------------------------------------------------------------ placement
    def _vae_device(self) -> torch.device:
        return self.device or self.metric.vae.device() or torch.device("cpu")

    def _place(self) -> torch.device:
        """Follow the VAE's device: move the metric (and the bank, unless pinned) there."""
        device = self._vae_device()
        if self.metric.device != device:
            self.metric.to(device)
        bank_device = self.bank_device or device
        if self.bank.device != bank_device:
            self._move_banks(bank_device)
        return device

    def _move_banks(self, device: torch.device) -> None:
        state = self.bank.state_dict()
        self.bank = LatentBank(self.bank_capacity, dtype=self.bank_dtype, device=device)
        self.bank.load_state_dict(state)
        self.metric.bank = self.bank
        if self._sources is not None:
            src = self._sources.state_dict()
            self._sources = LatentBank(self.bank_capacity, dtype=self.bank_dtype, device=device)
            self._sources.load_state_dict(src)

    def to(self, device: torch.device | str) -> IFIDMonitor:
        """Run the metric (and keep the bank, unless ``bank_device`` was given) on ``device``."""
        self.device = torch.device(device)
        self._place()
        return self

    # ------------------------------------------------------------------ training steps
    def attach(self, model: nn.Module | None = None) -> None:
        """Register forward hooks that collect latents (or images) during training forwards.

        * ``latent_source="hook"``: hooks ``encoder_module`` (or the module found in the VAE).
        * ``"outputs"``: hooks ``model`` and reads ``outputs_key`` from its forward output.
        * ``"encode"``: hooks ``model`` before its forward and keeps the images it receives
          (keyword ``pixel_values``/``images``/``image``/``x`` or the first tensor argument).

        Hooks only collect while the hooked module is in training mode and the monitor is not
        itself running the VAE; :meth:`observe` consumes what they collected. Call
        :meth:`detach` to remove them.
        """
        self.detach()
        if self.latent_source == "hook":
            module, transform = self._hook_target()
            self._hooks.append(module.register_forward_hook(self._make_output_hook(transform)))
            return
        if model is None:
            raise ValueError(
                f"attach(model) needs the model whose forward returns the training outputs "
                f"(latent_source={self.latent_source!r})."
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if self.latent_source == "outputs":
            self._hooks.append(model.register_forward_hook(self._make_output_hook(self._read_key)))
        else:
            self._hooks.append(
                model.register_forward_pre_hook(self._images_pre_hook, with_kwargs=True)
            )

    def detach(self) -> None:
        """Remove the hooks registered by :meth:`attach` and drop anything they collected."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._captured, self._captured_images = [], []

    def _hook_target(self) -> tuple[nn.Module, Callable[[Any], Tensor]]:
        if self.encoder_module is not None:
            return self.encoder_module, self.hook_transform or _first_tensor
        if self.vae is None:
            raise ValueError(
                "latent_source='hook' needs encoder_module=<the nn.Module whose output is the "
                "latents> when no vae= is given."
            )
        module, transform = latent_hook_point(self.vae)
        return module, self.hook_transform or transform

    def _make_output_hook(self, transform: Callable[[Any], Tensor]) -> Callable[..., None]:
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
        while len(captured) > 1 and sum(t.shape[0] for t in captured[1:]) >= self.bank_capacity:
            captured.pop(0)

    def _read_key(self, outputs: Any) -> Tensor:
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

    def observe(
        self,
        latents: Tensor | None = None,
        images: Tensor | None = None,
        outputs: Any = None,
        *,
        step: int | None = None,
    ) -> int:
        """Record one training step: insert its latents into the bank; refresh the index if due.

        Args:
            latents: (B, ...) latents of the step's images (any ``latent_source``; detached here).
            images: (B, C, H, W) images of the step, for ``latent_source="encode"`` and for
                ``exact_bank`` (then aligned with ``latents``).
            outputs: the training step's outputs; ``latents = outputs[outputs_key]``.
            step: the global (optimizer) step; default: one more than the last observed.

        Returns:
            The number of latents inserted.

        Raises:
            KeyError: ``outputs`` lacks ``outputs_key`` (the message lists the keys it has).
            ValueError: nothing to insert (no latents given, none collected by the hooks), or
                ``exact_bank`` without the matching images.
        """
        if latents is None and outputs is not None:
            latents = self._read_key(outputs)
        captured = False
        if latents is None and self.latent_source in ("hook", "outputs") and self._captured:
            latents, self._captured, captured = torch.cat(self._captured), [], True
        if images is None and self._captured_images:
            images = torch.cat(self._captured_images)
        self._captured_images = []
        if latents is None:
            if self.latent_source == "encode" and images is not None:
                latents, images = self._encode_subsample(images)
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
            self._check_training_latents(tuple(latents.shape[1:]))
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
        if self.bank_device is None and self.bank.device != latents.device:
            # Keep the bank where the latents are made: no device copy per step.
            self._move_banks(latents.device)
        ids = self.bank.add(latents.to(self.bank.device))
        if self._sources is not None:
            self._sources.add(images.detach().to(self._sources.device), ids=ids)
        self.steps_observed += 1
        self.step = int(step) if step is not None else self.step + 1
        if self.refresh_every_n_steps is not None and (
            self.last_refresh_step is None
            or self.step - self.last_refresh_step >= self.refresh_every_n_steps
        ):
            self.refresh_index()
        return int(latents.shape[0])

    def _encode_subsample(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # Keyed by (seed, observe() call, rank): the counter is checkpointed, so a resumed run
        # picks and samples exactly as an uninterrupted one.
        _, rank = world_and_rank()
        key = self.steps_observed * 65536 + rank
        (generator,) = keyed_generators(self.seed, [key], "subsample")
        batch = images.shape[0]
        n = max(1, math.ceil(self.encode_fraction * batch))
        if n < batch:
            pick = torch.randperm(batch, generator=generator)[:n].sort().values
            images = images[pick.to(images.device)]
        with self._eval_mode(), torch.no_grad():
            latents = self.metric.vae.encode(images, generator=generator)
        return latents, images

    # ------------------------------------------------------------------ index
    def refresh_index(self) -> int:
        """Rebuild the neighbour index from the bank (of all ranks); returns its number of rows.

        With ``exact_bank`` the bank's source images are re-encoded with the current encoder
        first. Collective under torch.distributed.
        """
        world, _ = world_and_rank()
        local = len(self.bank)
        smallest = all_reduce_int(local, "min") if world > 1 else local
        if smallest == 0:
            where = "" if world == 1 else " on at least one rank"
            raise ValueError(
                f"The latent bank is empty{where}: iFID needs training latents to find neighbours "
                "in. Call observe() on training steps before the first evaluation (with Lightning "
                "the callback does it on every training batch), or evaluate later."
            )
        if self.bank.latent_shape is not None:
            self._check_training_latents(tuple(self.bank.latent_shape))
        self._place()
        if self._sources is not None:
            self._reencode_bank()
        # The metric gathers the banks of all ranks (rows restored from one checkpoint on every
        # rank count once) and keeps no copy of the bank beside a compressed index.
        self.metric.bank = self.bank
        rows = self.metric.refresh_index()
        self.last_refresh_step = self.step
        self._index_rows = rows
        self._index_world = world
        self._index_ready = True
        return self._index_rows

    def _reencode_bank(self) -> None:
        state = self._sources.state_dict()  # rows in insertion order
        ids = state["ids"]
        images = state["vectors"].reshape(len(ids), *state["latent_shape"])
        device = self._vae_device()
        parts = []
        with self._eval_mode(), torch.no_grad():
            for chunk, chunk_ids in zip(
                images.split(self.eval_batch_size), ids.split(self.eval_batch_size)
            ):
                chunk = chunk.to(device, torch.float32)
                # A row's posterior sample depends on its id only (not on when it is re-encoded).
                gens = (
                    keyed_generators(self.seed, chunk_ids, "reference")
                    if self.metric.vae.sample_posterior
                    else None
                )
                latent = self.metric.vae.encode(chunk, generator=gens)
                parts.append(latent.detach().to(self.bank.device))
        # clear() keeps the id counter, so automatic ids stay unique after the refill.
        self.bank.clear()
        self.bank.add(torch.cat(parts), ids=ids)

    # ------------------------------------------------------------------ evaluation
    def due(self, step: int | None = None) -> bool:
        """Whether :meth:`maybe_evaluate` would evaluate at ``step`` (default: the last step)."""
        if self.eval_every_n_steps is None:
            return False
        step = self.step if step is None else int(step)
        last = self.last_eval_step or 0
        return step > 0 and step - last >= self.eval_every_n_steps

    def maybe_evaluate(self, step: int | None = None) -> dict[str, float] | None:
        """Evaluate when ``eval_every_n_steps`` steps have passed since the last evaluation.

        Returns:
            The metrics of :meth:`evaluate`, or None when no evaluation was due.
        """
        if self.eval_every_n_steps is None:
            raise ValueError(
                "maybe_evaluate() needs eval_every_n_steps=<int>; or call evaluate() yourself."
            )
        if not self.due(step):
            return None
        return self.evaluate(step)

    def evaluate(self, step: int | None = None) -> dict[str, float]:
        """Compute iFID and rFID of the current VAE on the evaluation set.

        Runs under no_grad with the VAE's modules in eval mode (their modes are restored after).
        The index is rebuilt first when ``refresh_every_n_steps`` is None or it was never built.
        Collective under torch.distributed (every rank must call it; each processes its share).

        Args:
            step: the current global step (default: the last observed step).

        Returns:
            ``{"ifid", "rfid"}`` (floats, lower is better), ``"step"``, ``"bank_size"`` (rows
            searched, all ranks) and ``"num_eval_images"``.

        Raises:
            ValueError: the bank is empty (no training step observed yet).
        """
        if step is not None:
            self.step = int(step)
        world, rank = world_and_rank()
        if (
            self.refresh_every_n_steps is None
            or not self._index_ready
            or self._index_world != world
        ):
            self.refresh_index()
        device = self._place()
        first_time = self._real_global is None
        with self._eval_mode(), torch.no_grad():
            self.metric.reset()
            self._apply_pending_real(rank, device)
            # Global positions seed each image's random choices: equal on any world size.
            positions = torch.arange(rank, self.num_eval_images, world)
            done = 0
            for batch in self._eval_batches(rank, world):
                part = positions[done : done + batch.shape[0]]
                self.metric.update(batch.to(device, torch.float32), positions=part)
                done += batch.shape[0]
            values = self.metric.compute()
        if first_time:
            self._real_global = self._global_real_statistics(world)
        result = {
            "ifid": float(values["ifid"]),
            "rfid": float(values["rfid"]),
            "step": int(self.step),
            "bank_size": int(self._index_rows),
            "num_eval_images": int(self.num_eval_images),
        }
        for key in ("ifid", "rfid"):
            if not math.isfinite(result[key]):
                raise ValueError(
                    f"{key} is {result[key]}: the features of the evaluation images or decodes "
                    "are degenerate; check the VAE and the feature network."
                )
        self.history.append(result)
        self.last_eval_step = int(self.step)
        return dict(result)

    @property
    def last_result(self) -> dict[str, float] | None:
        """The metrics of the latest evaluation, or None before the first."""
        return dict(self.history[-1]) if self.history else None

    def _apply_pending_real(self, rank: int, device: torch.device) -> None:
        """Install real statistics restored from a checkpoint (global sums; rank 0 holds them)."""
        if self._pending_real is None:
            return
        pending, self._pending_real = self._pending_real, None
        # The metric skips the real-image pass once its real statistics are cached.
        self.metric.load_real_statistics(
            {k: (v if rank == 0 else torch.zeros_like(v)) for k, v in pending.items()}
        )
        self._real_global = {k: v.clone() for k, v in pending.items()}

    def _global_real_statistics(self, world: int) -> dict[str, Tensor]:
        stats = self.metric.real_statistics()
        if world > 1:
            for key, value in stats.items():
                stats[key] = all_reduce_sum(value)
        return {key: value.cpu() for key, value in stats.items()}

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """VAE modules in eval mode (restored per sub-module after) and hooks silenced."""
        modes = [(m, m.training) for root in self.metric.vae.modules() for m in root.modules()]
        busy, self._busy = self._busy, True
        try:
            for module, _ in modes:
                module.training = False
            yield
        finally:
            for module, mode in modes:
                module.training = mode
            self._busy = busy

    # ------------------------------------------------------------------ looking at it
    def render_grid(self, num_rows: int | None = None) -> Tensor:
        """Rows of x | NN(x) | interpolant | reconstruction for the first evaluation images.

        NN(x) is the decoded nearest bank latent. Uses the current index (built if missing;
        collective under torch.distributed only in that case).

        Returns:
            (3, H', W') float32 tensor in [0, 1] (see :func:`ifid_callback.grid.image_grid`).
        """
        rows = min(num_rows or self.grid_rows, self.num_eval_images)
        if not self._index_ready:
            self.refresh_index()
        device = self._place()
        parts, have = [], 0
        for batch in self._eval_batches(0, 1):
            parts.append(batch)
            have += batch.shape[0]
            if have >= rows:
                break
        x = torch.cat(parts)[:rows].to(device, torch.float32)
        # The first evaluation images, with the random choices their evaluation makes.
        positions = torch.arange(rows)
        metric = self.metric
        with self._eval_mode(), torch.no_grad():
            z = metric._encode(x, positions)
            z_nn, _ = metric.neighbors(z, generator=metric._generators(positions, "pick"))
            mask = metric._generators(positions, "mask")
            z_hat = interpolate(z, z_nn, metric.interpolation, metric.alpha, mask)
            decoded = self.metric._decode(torch.cat([z_nn, z_hat, z]))
        nn_x, interp, recon = decoded.split(rows)
        return image_grid([x, nn_x, interp, recon], self.input_range)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Bank, counters, cached real statistics and history (plain types and CPU tensors).

        The random state is the counters: every random choice is keyed by the seed and a
        position, an id or ``steps_observed``, so a restored monitor draws what an uninterrupted
        one would.

        No collectives: under DDP each rank returns its own bank (frameworks save rank 0's).
        """
        # Restored statistics wait in _pending_real until the next evaluation installs them.
        real = self._real_global if self._real_global is not None else self._pending_real
        return {
            "format": _STATE_FORMAT,
            "bank": self.bank.state_dict(),
            "sources": self._sources.state_dict() if self._sources is not None else None,
            "step": self.step,
            "steps_observed": self.steps_observed,
            "last_refresh_step": self.last_refresh_step,
            "last_eval_step": self.last_eval_step,
            "history": [dict(h) for h in self.history],
            "real_statistics": (
                {k: v.clone() for k, v in real.items()} if real is not None else None
            ),
            "eval_fingerprint": self._eval_fingerprint,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; missing entries keep their defaults.

        A bank saved with another capacity keeps its newest rows. Cached real statistics are
        dropped (with a warning) when the evaluation set differs from the saved one. The index is
        rebuilt at the next refresh or evaluation.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping from state_dict(), got {type(state)}.")
        device = self.bank.device
        bank = _bank_from_state(state.get("bank"), self.bank_capacity, self.bank_dtype, device)
        sources = None
        if self._sources is not None:
            sources = _bank_from_state(
                state.get("sources"), self.bank_capacity, self.bank_dtype, device
            )
            if len(sources) != len(bank):
                warnings.warn(
                    "The checkpoint has no source images for its bank rows (saved without "
                    "exact_bank); the bank starts empty.",
                    UserWarning,
                    stacklevel=2,
                )
                bank = LatentBank(self.bank_capacity, dtype=self.bank_dtype, device=device)
                sources = LatentBank(self.bank_capacity, dtype=self.bank_dtype, device=device)
        real = state.get("real_statistics")
        if real is not None and state.get("eval_fingerprint") != self._eval_fingerprint:
            warnings.warn(
                "The checkpoint's cached real-image statistics belong to another evaluation set; "
                "they are recomputed at the next evaluation.",
                UserWarning,
                stacklevel=2,
            )
            real = None
        # Everything parsed: from here on the monitor changes.
        self.bank = bank
        self.metric.bank = bank
        self._sources = sources
        self.step = int(state.get("step", 0))
        self.steps_observed = int(state.get("steps_observed", 0))
        self.last_refresh_step = _opt_int(state.get("last_refresh_step"))
        self.last_eval_step = _opt_int(state.get("last_eval_step"))
        self.history = [dict(h) for h in state.get("history", [])]
        # A full reset of the metric (cached real statistics included); the index is rebuilt.
        self.metric.load_real_statistics(None)
        self.metric.reset()
        self._index_ready = False
        self._real_global = None
        self._pending_real = (
            {k: torch.as_tensor(v).clone() for k, v in real.items()} if real is not None else None
        )
        self._captured, self._captured_images = [], []

    def __repr__(self) -> str:
        return (
            f"IFIDMonitor(latent_source={self.latent_source!r}, bank={len(self.bank)}/"
            f"{self.bank_capacity}, eval_images={self.num_eval_images}, step={self.step}, "
            f"evaluations={len(self.history)})"
        )


# ---------------------------------------------------------------------- helpers
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _first_tensor(output: Any) -> Tensor:
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


def _vae_in_channels(modules: list[nn.Module]) -> int | None:
    """Input channels of the VAE's first convolution (its encoder's input), when it has one."""
    for root in modules:
        for module in root.modules():
            if isinstance(module, nn.Conv2d):
                return int(module.in_channels)
    return None


def _bank_from_state(
    state: Mapping[str, Any] | None, capacity: int, dtype: str, device: torch.device
) -> LatentBank:
    bank = LatentBank(capacity, dtype=dtype, device=device)
    if state:
        # Saved with another capacity: loading re-adds the rows in insertion order, so the
        # newest `capacity` rows survive.
        bank.load_state_dict({**state, "capacity": capacity})
    return bank


def check_adapter_arguments(owner: str, monitor: Any, monitor_kwargs: Mapping[str, Any]) -> None:
    """Shared validation of a framework adapter's ``monitor=`` / ``**monitor_kwargs`` pair."""
    if monitor is not None and not isinstance(monitor, IFIDMonitor):
        raise TypeError(f"monitor must be an IFIDMonitor or None, got {type(monitor).__name__}.")
    if monitor is not None and monitor_kwargs:
        raise ValueError(
            f"Pass either a ready monitor or IFIDMonitor arguments, not both (got monitor and "
            f"{sorted(monitor_kwargs)})."
        )
    if monitor is None and "eval_images" not in monitor_kwargs:
        raise ValueError(
            f"{owner} needs evaluation images: pass eval_images=<(N, C, H, W) tensor or Dataset> "
            "(or a ready monitor=IFIDMonitor(...))."
        )
