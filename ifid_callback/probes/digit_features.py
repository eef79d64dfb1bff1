"""A small digit classifier whose penultimate layer is the feature space of the digits study.

Inception on 8x8 digits measures little (the images are upsampled 37x) and costs much on a CPU.
Following the practice of MNIST FIDs, the digits study measures its FIDs in the penultimate
layer of a small convolutional classifier trained on the study's own training split. These are
*not* Inception FIDs and are comparable only with each other.

The network is trained deterministically (fixed seed, fixed batch order, one thread) at first
use and cached under ``$XDG_CACHE_HOME/ifid_callback/`` (default ``~/.cache/ifid_callback/``),
keyed by its recipe; nothing is written into the working directory. It reports its held-out
accuracy and the FID floors of real images in its feature space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fid import fid_from_features

__all__ = ["DigitClassifier", "DigitFeatures", "DigitRecipe", "digit_features", "train_digit_net"]

_FORMAT = "ifid-digit-features"


@dataclass(frozen=True)
class DigitRecipe:
    """How the digit classifier is trained (its cache key).

    Attributes:
        width: channels of the first two convolutions (the third has twice as many).
        features: size of the penultimate layer (the FID feature dimension).
        epochs: passes over the 1400 training digits.
        batch_size: digits per step.
        lr: Adam learning rate (cosine decay to 0).
        shift: random translation of up to this many pixels (zero padding) in training.
        seed: seeds initialisation, batch order and augmentation.
        split_seed: the digits' train/held-out split (see :class:`~ifid_callback.data.EmbeddedDigits`).
    """

    width: int = 32
    features: int = 64
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    shift: int = 1
    seed: int = 0
    split_seed: int = 0

    def key(self) -> str:
        text = json.dumps({"format": _FORMAT, "version": 1, **dataclasses.asdict(self)})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class DigitClassifier(nn.Module):
    """conv-conv-pool (4x4) - conv-pool (2x2) - linear (penultimate) - linear (10 classes).

    Input ``(B, 1, 8, 8)`` in [-1, 1].
    """

    def __init__(self, width: int = 32, features: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 4, features)
        self.head = nn.Linear(features, 10)

    def spatial(self, x: Tensor) -> Tensor:
        """Features at 4x4 resolution, ``(B, width, 4, 4)`` (the alignment target of the zoo)."""
        x = F.relu(self.conv1(x))
        return F.max_pool2d(F.relu(self.conv2(x)), 2)

    def penultimate(self, x: Tensor) -> Tensor:
        """The FID features: the penultimate layer before its ReLU, ``(B, features)``."""
        x = F.max_pool2d(F.relu(self.conv3(self.spatial(x))), 2)
        return self.fc(x.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.penultimate(x)))


class DigitFeatures(nn.Module):
    """Feature extractor of the digits study: :meth:`DigitClassifier.penultimate`.

    ``forward`` maps ``(B, 1, 8, 8)`` images in [-1, 1] (values are clamped to it) to
    ``(B, num_features)`` float32. :meth:`spatial` gives the ``(B, width, 4, 4)`` maps.

    Attributes:
        num_features: the feature dimension.
        info: recipe, cache key, train/held-out accuracy and FID floors (see
            :func:`digit_features`).
    """

    def __init__(self, net: DigitClassifier, info: dict[str, Any]) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.num_features = int(net.fc.out_features)
        self.info = info

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net.penultimate(images.float().clamp(-1.0, 1.0))

    def spatial(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net.spatial(images.float().clamp(-1.0, 1.0))


def _shifted(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    if shift == 0:
        return x
    pad = F.pad(x, (shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
    return pad[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def _accuracy(net: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((net(images).argmax(1) == labels).float().mean())


def train_digit_net(recipe: DigitRecipe = DigitRecipe()) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train the classifier on the digits' training split; returns it and its accuracies.

    Deterministic: the same recipe gives bit-identical weights in every run on the same machine
    (seeded initialisation, batch order and shifts; one torch thread while training).
    """
    from ..data import EmbeddedDigits

    train, val = (
        EmbeddedDigits("train", recipe.split_seed),
        EmbeddedDigits("val", recipe.split_seed),
    )
    x, y = train.as_tensor(), train.labels
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed reduction order: the same weights on every run
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            net = DigitClassifier(recipe.width, recipe.features)
        gen = torch.Generator().manual_seed(recipe.seed)
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        steps_per_epoch = -(-len(x) // recipe.batch_size)
        total = recipe.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total))
        )
        net.train()
        for _ in range(recipe.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), recipe.batch_size):
                idx = perm[start : start + recipe.batch_size]
                loss = F.cross_entropy(net(_shifted(x[idx], recipe.shift, gen)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        info = {
            "train_accuracy": _accuracy(net, x, y),
            "heldout_accuracy": _accuracy(net, val.as_tensor(), val.labels),
        }
    finally:
        torch.set_num_threads(threads)
    return net, info


def _floors(features: DigitFeatures, split_seed: int) -> dict[str, Any]:
    """FIDs between real digit sets in this feature space: what a perfect model would score."""
    from ..data import EmbeddedDigits

    train = features(EmbeddedDigits("train", split_seed).as_tensor()).numpy()
    val = features(EmbeddedDigits("val", split_seed).as_tensor()).numpy()
    return {
        "heldout_vs_train": fid_from_features(val, train),
        "train_half_vs_half": fid_from_features(train[0::2], train[1::2]),
        "heldout_half_vs_half": fid_from_features(val[0::2], val[1::2]),
        "n_train": len(train),
        "n_heldout": len(val),
        "halves": "interleaved (even and odd positions)",
    }


def _cache_dir() -> Path:
    # The same place the library caches its converted Inception weights.
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ifid_callback"


def digit_features(recipe: DigitRecipe = DigitRecipe(), *, cache: bool = True) -> DigitFeatures:
    """The digits study's feature extractor: trained at first use, then read from the cache.

    Returns a :class:`DigitFeatures` whose ``info`` holds the recipe, its cache key, the
    train and held-out accuracy, and the FID floors (held-out vs train, interleaved halves of
    each split). ``cache=False`` trains in memory without reading or writing the cache.
    """
    path = _cache_dir() / f"digit-features-{recipe.key()}.pt"
    if cache and path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") == _FORMAT and payload.get("key") == recipe.key():
            net = DigitClassifier(recipe.width, recipe.features)
            net.load_state_dict(payload["state_dict"])
            return DigitFeatures(net, payload["info"])
    net, acc = train_digit_net(recipe)
    info: dict[str, Any] = {"recipe": dataclasses.asdict(recipe), "key": recipe.key(), **acc}
    features = DigitFeatures(net, info)
    info["fid_floors"] = _floors(features, recipe.split_seed)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        torch.save(
            {"format": _FORMAT, "key": recipe.key(), "state_dict": net.state_dict(), "info": info},
            tmp,
        )
        os.replace(tmp, path)
    return features
