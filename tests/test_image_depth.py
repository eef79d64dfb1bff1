"""ImageFolder reads 16-bit images at full range, drops alpha like torch-fidelity/clean-fid, and
refuses images whose value range it cannot know."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifid_callback.data import ImageFolder


def _ramp16(height: int = 4, width: int = 256) -> np.ndarray:
    """(H, W) uint16 ramp over the whole 16-bit range, 0 and 65535 included, different per row."""
    base = np.linspace(0, 65535, width).round().astype(np.int64)
    rows = [np.roll(base, 17 * r) for r in range(height)]
    return np.stack(rows).astype(np.uint16)


def _expected(values: np.ndarray) -> torch.Tensor:
    """Independent reference: value / 65535 mapped to [-1, 1], replicated to 3 channels."""
    unit = torch.from_numpy(values.astype(np.float64) / 65535.0 * 2.0 - 1.0)
    return unit.unsqueeze(0).expand(3, -1, -1)


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit colour): (H, W, C) uint16, C 1/3/4."""
    h, w, c = pixels.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_a_16_bit_grey_png_keeps_its_full_range(tmp_path):
    ramp = _ramp16()
    Image.fromarray(ramp).save(tmp_path / "ramp.png")  # PIL writes mode I;16 as a 16-bit PNG
    with Image.open(tmp_path / "ramp.png") as im:
        assert im.mode == "I;16"
    got = ImageFolder(tmp_path)[0]
    assert got.dtype == torch.float32 and got.shape == (3, 4, 256)
    torch.testing.assert_close(got.double(), _expected(ramp), atol=1e-6, rtol=0)
    # Not clipped: an 8-bit conversion turned nearly all of this ramp white.
    assert (got > 0.999).float().mean() < 0.01


def test_a_16_bit_grey_image_given_as_32_bit_integers_keeps_its_full_range(tmp_path):
    ramp = _ramp16().astype(np.int32)
    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    with Image.open(tmp_path / "ramp.tif") as im:
        assert im.mode == "I"
    torch.testing.assert_close(
        ImageFolder(tmp_path)[0].double(), _expected(ramp), atol=1e-6, rtol=0
    )


def test_16_bit_resizing_matches_the_8_bit_path_on_the_same_picture(tmp_path):
    # The same picture at both depths (v * 257 maps 0..255 onto 0..65535 exactly): resized and
    # cropped, the two must agree to within the 8-bit path's own rounding. Values stay inside
    # 40..215 so that bicubic overshoot never reaches the 8-bit path's clipping between passes.
    g = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(48) * 2, np.arange(80)) // 2
    picture = (40 + ramp + g.integers(0, 40, (48, 80))).astype(np.uint8)
    assert picture.min() >= 40 and picture.max() <= 215
    (tmp_path / "8").mkdir()
    (tmp_path / "16").mkdir()
    Image.fromarray(picture).save(tmp_path / "8" / "p.png")
    Image.fromarray(picture.astype(np.uint16) * 257).save(tmp_path / "16" / "p.png")
    for size in (24, 48, 64):
        eight = ImageFolder(tmp_path / "8", size=size)[0]
        sixteen = ImageFolder(tmp_path / "16", size=size)[0]
        assert sixteen.shape == eight.shape == (3, size, size)
        assert sixteen.min() >= -1.0 and sixteen.max() <= 1.0
        torch.testing.assert_close(sixteen, eight, atol=3.0 / 255, rtol=0)  # 1.5 levels


def test_a_16_bit_grey_png_crops_like_the_8_bit_path(tmp_path):
    ramp = _ramp16(8, 64)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    got = ImageFolder(tmp_path, size=8)[0]  # shorter side already 8: a center crop only
    torch.testing.assert_close(got.double(), _expected(ramp[:, 28:36]), atol=1e-6, rtol=0)


def test_a_16_bit_colour_png_keeps_its_range_at_8_bit_precision(tmp_path):
    # PIL reads 16-bit colour PNGs at 8 bits per channel (each value's high byte).
    ramp = _ramp16(2, 64)
    pixels = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 40000)], axis=-1)
    _write_png16(tmp_path / "rgb16.png", pixels)
    got = ImageFolder(tmp_path)[0].double()
    want = torch.from_numpy(pixels.astype(np.float64) / 65535.0 * 2.0 - 1.0).permute(2, 0, 1)
    torch.testing.assert_close(got, want, atol=2.0 / 255, rtol=0)


def test_alpha_is_dropped_like_torch_fidelity_and_clean_fid(tmp_path):
    g = np.random.default_rng(1)
    rgb = g.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    alpha = np.tile(np.array([0, 128, 255], dtype=np.uint8), (6, 4))[:, :10, None]
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1), mode="RGBA").save(tmp_path / "a.png")
    got = ImageFolder(tmp_path)[0]
    # Their folder loaders do Image.open(path).convert("RGB"): the colour values, alpha ignored
    # (a fully transparent pixel keeps its colour; nothing is composited).
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "RGBA"
        reference = np.asarray(im.convert("RGB"))
    assert np.array_equal(reference, rgb)
    want = torch.from_numpy(rgb.astype(np.float64) / 127.5 - 1.0).permute(2, 0, 1)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)


def test_images_without_a_known_range_are_refused(tmp_path):
    (tmp_path / "float").mkdir()
    Image.fromarray(np.linspace(0, 3, 64, dtype=np.float32).reshape(8, 8)).save(
        tmp_path / "float" / "f.tif"
    )
    with pytest.raises(ValueError, match=r"f\.tif.*mode 'F'.*8- or 16-bit"):
        ImageFolder(tmp_path / "float")[0]
    (tmp_path / "wide").mkdir()
    Image.fromarray(np.full((8, 8), 70000, dtype=np.int32)).save(tmp_path / "wide" / "w.tif")
    with pytest.raises(ValueError, match=r"w\.tif.*70000.*0\.\.65535"):
        ImageFolder(tmp_path / "wide")[0]
