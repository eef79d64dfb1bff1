"""Tests of the embedded photo patches and the image-folder reader/writer."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from ifid_callback import data
from ifid_callback.data import (
    PHOTOS,
    EmbeddedPatches,
    ImageFolder,
    save_image_folder,
)

ALL_INSTALLED = all(s.path() is not None for s in PHOTOS)
needs_all = pytest.mark.skipif(not ALL_INSTALLED, reason="scikit-image or matplotlib missing")


def _clear_caches() -> None:
    data._load_photo.cache_clear()
    data._cut_cached.cache_clear()


# ----------------------------------------------------------------------------- sources


def test_photo_sources_are_real_rgb_photographs_in_installed_packages():
    names = [s.name for s in PHOTOS]
    assert len(names) == len(set(names))
    for source in PHOTOS:
        assert source.licence and source.package and source.file
        path = source.path()
        if path is None:
            continue
        with Image.open(path) as im:
            assert im.mode == "RGB", source.name
            assert min(im.size) >= 256, source.name
            array = np.asarray(im)
        # A colour photograph: channels differ somewhere and there are many distinct colours.
        assert not np.array_equal(array[..., 0], array[..., 1]), source.name
        packed = array.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
        assert len(np.unique(packed)) > 5000, source.name


def test_construction_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    _clear_caches()
    assert len(EmbeddedPatches("val", 64)) > 0


# ----------------------------------------------------------------------------- patches


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("split", ["train", "val"])
def test_items_shape_dtype_range(split, size):
    ds = EmbeddedPatches(split, size)
    x = ds[0]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    full = ds.as_tensor()
    assert full.shape == (len(ds), 3, size, size) and full.dtype == torch.float32
    assert full.min() >= -1.0 and full.max() <= 1.0
    # Values sit on the 8-bit grid mapped to [-1, 1].
    grid = (full + 1.0) * 127.5
    assert (grid - grid.round()).abs().max() < 1e-4
    torch.testing.assert_close(ds[len(ds) - 1], full[-1])
    assert ds.boxes.shape == (len(ds), 5) and ds.boxes.dtype == torch.int64


def test_deterministic_across_constructions_and_cache_clears():
    a = EmbeddedPatches("train", 32)
    b = EmbeddedPatches("train", 32)
    _clear_caches()
    c = EmbeddedPatches("train", 32)
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert torch.equal(a.as_tensor(), c.as_tensor())
    assert torch.equal(a.boxes, c.boxes)


@needs_all
def test_documented_counts():
    counts = {
        (s, split): len(EmbeddedPatches(split, s)) for s in (32, 64) for split in data._SPLITS
    }
    assert counts == {
        (32, "train"): 6077,
        (32, "val"): 1706,
        (64, "train"): 1347,
        (64, "val"): 316,
    }
    assert "6077" in EmbeddedPatches.__doc__ and "1706" in EmbeddedPatches.__doc__


def test_counts_match_hand_computed_grid_for_astronaut():
    # astronaut is 512x512, so its base factor is 1. The val band starts at column
    # 0.75 * 512 = 384 (a multiple of 16): train 512x384, val 512x128 native pixels.
    def n(length, size, stride):
        return len(range(0, length - size + 1, stride))

    ds_t = EmbeddedPatches("train", 32, photos=["astronaut"], min_std=0)
    ds_v = EmbeddedPatches("val", 32, photos=["astronaut"], min_std=0)
    train = n(512, 32, 16) * n(384, 32, 16) + n(256, 32, 16) * n(192, 32, 16)
    val = n(512, 32, 16) * n(128, 32, 16) + n(256, 32, 16) * n(64, 32, 16)
    assert (len(ds_t), len(ds_v)) == (train, val) == (878, 262)
    ds = EmbeddedPatches("train", 64, stride=64, scale=1.0, photos=["astronaut"], min_std=0)
    assert len(ds) == 8 * 6


def test_boxes_locate_patches_in_the_native_photo():
    # At scale 1.0 astronaut is not resized, so each patch is exactly its box of the photo.
    ds = EmbeddedPatches("val", 32, stride=32, scale=1.0, photos=["astronaut"], min_std=0)
    with Image.open(PHOTOS[0].path()) as im:
        photo = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    for i in range(0, len(ds), 5):
        _, y0, x0, y1, x1 = ds.boxes[i].tolist()
        assert (y1 - y0, x1 - x0) == (32, 32)
        expected = photo[:, y0:y1, x0:x1].float() / 127.5 - 1.0
        torch.testing.assert_close(ds[i], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [32, 64])
def test_train_and_val_boxes_never_overlap(size):
    train = EmbeddedPatches("train", size)
    val = EmbeddedPatches("val", size)
    assert train.sources == val.sources
    used = set()
    for index, source in enumerate(train.sources):
        t = train.boxes[train.boxes[:, 0] == index, 1:]
        v = val.boxes[val.boxes[:, 0] == index, 1:]
        assert len(t) > 0 and len(v) > 0, source.name
        used.add(source.name)
        # All pairs: boxes (y0, x0, y1, x1) overlap iff both intervals overlap.
        ty0, tx0, ty1, tx1 = (t[:, None, k] for k in range(4))
        vy0, vx0, vy1, vx1 = (v[None, :, k] for k in range(4))
        overlap = (ty0 < vy1) & (vy0 < ty1) & (tx0 < vx1) & (vx0 < tx1)
        assert not overlap.any(), source.name
        # Boxes are inside the photo.
        h, w = data._load_photo(source).shape[:2]
        for b in (t, v):
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
            assert (b[:, 2] <= h).all() and (b[:, 3] <= w).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert len(used) == len(train.sources)


def test_val_pixels_do_not_influence_train_patches_and_vice_versa():
    # Resizing reads neighbouring pixels; the bands are cut apart before resizing, so changing
    # every pixel of one band leaves the other split's patches bit-identical.
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    col = data._split_column(300, 0.25)
    assert col % 16 == 0 and 0 < col < 300
    changed_val = photo.copy()
    changed_val[:, col:] = 255 - changed_val[:, col:]
    changed_train = photo.copy()
    changed_train[:, :col] = 255 - changed_train[:, :col]
    factors = [0.7, 0.45]

    def cut(p, split):
        return data._cut_photo(p, split, 0.25, factors, 32, 16, 0.0)

    train, train_boxes = cut(photo, "train")
    val, val_boxes = cut(photo, "val")
    assert len(train) > 0 and len(val) > 0
    assert np.array_equal(cut(changed_val, "train")[0], train)
    assert np.array_equal(cut(changed_train, "val")[0], val)
    assert not np.array_equal(cut(changed_train, "train")[0], train)
    assert (train_boxes[:, 3] <= col).all() and (val_boxes[:, 1] >= col).all()


def test_patches_hold_photo_content():
    ds = EmbeddedPatches("train", 32, min_std=0)
    x = ds.as_tensor()
    std = x.flatten(1).std(dim=1)
    assert (std > 0.04).float().mean() > 0.9
    assert x.std() > 0.3
    # Neighbouring pixels are correlated as in photographs (noise would give ~0).
    a, b = x[..., :-1].flatten(), x[..., 1:].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.8
    # With the default filter every patch has some structure, and no two patches are identical.
    filtered = EmbeddedPatches("train", 32).as_tensor()
    assert (filtered.flatten(1).std(dim=1) >= 0.04).all()
    assert len(torch.unique(filtered.flatten(1), dim=0)) == len(filtered)


def test_scale_stride_photos_knobs():
    one = EmbeddedPatches("train", 32, scale=1.0)
    pyramid = EmbeddedPatches("train", 32, scale=(1.0, 0.5))
    assert len(pyramid) > len(one) and one.scales == (1.0,)
    assert len(EmbeddedPatches("train", 32, stride=32)) < len(pyramid)
    sub = EmbeddedPatches("val", 32, photos=["coffee", "chelsea"])
    assert [s.name for s in sub.sources] == ["coffee", "chelsea"]
    assert set(sub.boxes[:, 0].tolist()) == {0, 1}


def test_max_items_is_a_seeded_subset():
    full = EmbeddedPatches("train", 32)
    a = EmbeddedPatches("train", 32, max_items=100, seed=3)
    b = EmbeddedPatches("train", 32, max_items=100, seed=3)
    c = EmbeddedPatches("train", 32, max_items=100, seed=4)
    assert len(a) == 100
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert not torch.equal(a.boxes, c.boxes)
    # Every kept item is the item of the full split with the same box (boxes are unique).
    where = {tuple(box): i for i, box in enumerate(full.boxes.tolist())}
    assert len(where) == len(full)
    for j, box in enumerate(a.boxes.tolist()):
        assert torch.equal(a[j], full[where[tuple(box)]])
    assert len(EmbeddedPatches("val", 32, max_items=10**9)) == len(EmbeddedPatches("val", 32))


def test_hflip_appends_mirror_images():
    plain = EmbeddedPatches("val", 32)
    flipped = EmbeddedPatches("val", 32, hflip=True)
    n = len(plain)
    assert len(flipped) == 2 * n
    torch.testing.assert_close(flipped.as_tensor()[:n], plain.as_tensor())
    torch.testing.assert_close(flipped[n + 5], plain[5].flip(-1))


def test_describe_and_repr():
    ds = EmbeddedPatches("val", 64)
    text = ds.describe()
    assert "'val'" in text and "size=64" in text and str(len(ds)) in text
    assert all(s.name in text for s in ds.sources)
    assert repr(ds) == text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "split"),
        ({"size": 2}, "size"),
        ({"size": 32.0}, "size"),
        ({"stride": 0}, "stride"),
        ({"scale": 0.0}, "scale"),
        ({"scale": ()}, "scale"),
        ({"max_items": 0}, "max_items"),
        ({"val_fraction": 0.9}, "val_fraction"),
        ({"min_std": -1.0}, "min_std"),
        ({"photos": ["lena"]}, "unknown photos"),
        ({"photos": []}, "photos"),
        ({"size": 64, "scale": 0.05}, "no 64x64 patches"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmbeddedPatches(**kwargs)


# ----------------------------------------------------------------------------- image folders


def test_save_and_read_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 12, 10, generator=gen) * 2 - 1
    images[0, 0, 0, 0], images[0, 0, 0, 1] = -1.0, 1.0
    paths = save_image_folder(images, tmp_path / "out", prefix="x")
    assert [p.name for p in paths] == [f"x_{i:05d}.png" for i in range(5)]
    folder = ImageFolder(tmp_path / "out")
    assert len(folder) == 5 and folder.paths == paths
    back = torch.stack([folder[i] for i in range(5)])
    assert back.shape == images.shape and back.dtype == torch.float32
    assert (back - images).abs().max() <= 1 / 255 + 1e-6
    assert back[0, 0, 0, 0] == -1.0 and back[0, 0, 0, 1] == 1.0
    # Values already on the 8-bit grid come back exactly.
    again = save_image_folder(back, tmp_path / "again")
    assert torch.equal(torch.stack([ImageFolder(tmp_path / "again")[i] for i in range(5)]), back)
    assert len(again) == 5


def test_embedded_patches_round_trip_exactly(tmp_path):
    x = EmbeddedPatches("val", 32, max_items=8).as_tensor()
    save_image_folder(x, tmp_path)
    folder = ImageFolder(tmp_path)
    assert torch.equal(torch.stack([folder[i] for i in range(len(folder))]), x)


def test_grayscale_saved_and_read_as_rgb(tmp_path):
    gray = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    save_image_folder(gray, tmp_path)
    x = ImageFolder(tmp_path)[0]
    assert x.shape == (3, 8, 8)
    torch.testing.assert_close(x[0], x[1])
    assert (x[0] - gray[0, 0]).abs().max() <= 1 / 255 + 1e-6


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_recursive_sorted_order_and_filters(tmp_path):
    names = [
        "b/z.png",
        "a/y.jpg",
        "10.png",
        "9.PNG",
        "a/b/c.jpeg",
        "a/notes.txt",
        ".hidden.png",
        ".cache/skip.png",
        "c.bmp",
    ]
    for i, name in enumerate(names):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("not an image")
        else:
            _write(tmp_path / name, np.full((4, 4, 3), i * 10))
    folder = ImageFolder(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in folder.paths]
    assert rel == ["10.png", "9.PNG", "a/b/c.jpeg", "a/y.jpg", "b/z.png", "c.bmp"]
    assert rel == sorted(rel)
    only_png = ImageFolder(tmp_path, extensions=("png",))
    assert [p.name for p in only_png.paths] == ["10.png", "9.PNG", "z.png"]
    assert "6 images" in repr(folder)


def test_resize_and_center_crop(tmp_path):
    # 40 wide, 20 high: left quarter red, middle half green, right quarter blue.
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10, 0] = 255
    image[:, 10:30, 1] = 255
    image[:, 30:, 2] = 255
    _write(tmp_path / "wide.png", image)
    cropped = ImageFolder(tmp_path, size=10)[0]
    assert cropped.shape == (3, 10, 10)
    # Resized to 20x10, the centre 10x10 is the green middle half (bicubic rings at its edges).
    inner = cropped[:, :, 1:-1]
    assert (inner[1] > 0.9).all() and (inner[0] < -0.9).all() and (inner[2] < -0.9).all()
    whole = ImageFolder(tmp_path, size=10, center_crop=False)[0]
    assert whole.shape == (3, 10, 20)
    assert whole[0, :, 0].mean() > 0.9 and whole[2, :, -1].mean() > 0.9
    up = ImageFolder(tmp_path, size=30)[0]
    assert up.shape == (3, 30, 30) and up.min() >= -1 and up.max() <= 1


def test_mixed_sizes_need_size(tmp_path):
    _write(tmp_path / "a.png", np.zeros((8, 8, 3)))
    _write(tmp_path / "b.png", np.zeros((8, 12, 3)))
    with pytest.raises(ValueError, match="size="):
        ImageFolder(tmp_path)
    folder = ImageFolder(tmp_path, size=6)
    assert {tuple(folder[i].shape) for i in range(2)} == {(3, 6, 6)}


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(ValueError, match="size"):
        ImageFolder(tmp_path, size=0)


@pytest.mark.parametrize(
    "images, error, match",
    [
        (torch.zeros(2, 3, 4), ValueError, "shape"),
        (torch.zeros(2, 4, 4, 4), ValueError, "shape"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), TypeError, "float"),
        (torch.full((1, 3, 4, 4), 1.5), ValueError, r"clamp"),
        (torch.full((1, 3, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.zeros(0, 3, 4, 4), ValueError, "empty"),
        (np.zeros((1, 3, 4, 4)), TypeError, "Tensor"),
    ],
)
def test_save_image_folder_rejects_bad_input(tmp_path, images, error, match):
    with pytest.raises(error, match=match):
        save_image_folder(images, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_packages_are_skipped_with_a_warning_or_a_clear_error(monkeypatch):
    real_path = data.PhotoSource.path

    def without_matplotlib(self):
        return None if self.package == "matplotlib" else real_path(self)

    monkeypatch.setattr(data.PhotoSource, "path", without_matplotlib)
    with pytest.warns(UserWarning, match="grace_hopper"):
        ds = EmbeddedPatches("val", 64)
    assert "grace_hopper" not in [s.name for s in ds.sources]
    monkeypatch.setattr(data.PhotoSource, "path", lambda self: None)
    with pytest.raises(RuntimeError, match="install scikit-image and matplotlib"):
        EmbeddedPatches("val", 64)
