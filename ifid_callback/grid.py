"""Image grids for looking at iFID: rows of x | NN(x) | interpolant | reconstruction."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["COLUMN_TITLES", "image_grid", "save_png"]

COLUMN_TITLES = ("x", "NN(x)", "interpolant", "reconstruction")


def image_grid(
    columns: Sequence[Tensor],
    input_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 2,
    pad_value: float = 1.0,
    titles: Sequence[str] | None = None,
) -> Tensor:
    """Lay out image batches as the columns of a grid, one row per sample.

    Args:
        columns: equally shaped image batches (B, C, H, W) in ``input_range``; column j of row i
            is ``columns[j][i]``. One-channel images are shown in grey; of more than three
            channels only the first three are shown.
        input_range: (low, high) value range of the images; values are mapped to [0, 1] and
            clamped.
        padding: pixels of ``pad_value`` between and around the cells.
        pad_value: value of the padding, in [0, 1] (1.0 is white).
        titles: one title per column, written in black above it (e.g. :data:`COLUMN_TITLES`).
            Cells narrower than the widest title are enlarged by an integer factor (nearest
            neighbour, at most 8x) so that the titles fit.

    Returns:
        A (3, header + rows * (H' + padding) + padding, cols * (W' + padding) + padding) float32
        tensor in [0, 1] on the CPU, the layout TensorBoard's ``add_image`` expects (CHW); H' = H
        and W' = W and no header without ``titles``.
    """
    if len(columns) == 0:
        raise ValueError("image_grid needs at least one column of images.")
    shape = tuple(columns[0].shape)
    if len(shape) != 4 or shape[0] == 0:
        raise ValueError(f"Each column must be a non-empty (B, C, H, W) batch, got {shape}.")
    for j, col in enumerate(columns):
        if tuple(col.shape) != shape:
            raise ValueError(
                f"Column {j} has shape {tuple(col.shape)} but column 0 has {shape}; all columns "
                "must hold the same number of equally sized images."
            )
    low, high = (float(v) for v in input_range)
    if not low < high:
        raise ValueError(f"input_range must be (low, high) with low < high, got {input_range}.")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    if titles is not None and len(titles) != len(columns):
        raise ValueError(f"got {len(titles)} titles for {len(columns)} columns; give one each.")
    rows, channels, h, w = shape
    cols = len(columns)
    scale = 1
    if titles is not None:
        font = _font()
        widest = max(_text_size(font, str(t))[0] for t in titles) + 2
        scale = min(8, max(1, -(-widest // w)))
        h, w = h * scale, w * scale
    grid = torch.full(
        (3, rows * (h + padding) + padding, cols * (w + padding) + padding),
        float(pad_value),
        dtype=torch.float32,
    )
    for j, col in enumerate(columns):
        img = ((col.detach().float().cpu() - low) / (high - low)).clamp(0.0, 1.0)
        if scale > 1:
            img = img.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        img = img.expand(-1, 3, -1, -1) if channels == 1 else img[:, :3]
        if img.shape[1] < 3:  # two channels: pad with zeros so the grid stays RGB
            img = torch.cat([img, torch.zeros(rows, 3 - img.shape[1], h, w)], dim=1)
        for i in range(rows):
            top, left = padding + i * (h + padding), padding + j * (w + padding)
            grid[:, top : top + h, left : left + w] = img[i]
    if titles is not None:
        grid = torch.cat([_title_strip(titles, w, padding, grid.shape[2], pad_value), grid], dim=1)
    return grid


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - top)


def _title_strip(
    titles: Sequence[str], cell_width: int, padding: int, width: int, pad_value: float
) -> Tensor:
    """A (3, h, width) strip with each title centred above its column, black on the padding."""
    from PIL import Image, ImageDraw

    font = _font()
    text_height = max(_text_size(font, str(t))[1] for t in titles)
    height = text_height + 2 * max(padding, 2) + 2
    background = int(round(float(pad_value) * 255))
    strip = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(strip)
    for j, title in enumerate(titles):
        text_width, _ = _text_size(font, str(title))
        left = padding + j * (cell_width + padding) + (cell_width - text_width) // 2
        draw.text((left, max(padding, 2)), str(title), fill=(0, 0, 0), font=font, anchor="lt")
    array = torch.frombuffer(bytearray(strip.tobytes()), dtype=torch.uint8)
    return array.reshape(height, width, 3).permute(2, 0, 1).float() / 255.0


def save_png(grid: Tensor, path: str | os.PathLike, scale: int = 1) -> None:
    """Write a (3, H, W) or (1, H, W) image in [0, 1] to ``path`` as an 8-bit PNG.

    Args:
        grid: image tensor in [0, 1] (clamped), CHW.
        path: output file; its directory must exist.
        scale: integer upscaling factor (nearest neighbour), handy for 16x16 tiles.
    """
    from PIL import Image

    if grid.ndim != 3 or grid.shape[0] not in (1, 3):
        raise ValueError(f"grid must be (3, H, W) or (1, H, W), got {tuple(grid.shape)}.")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}.")
    img = grid.detach().float().cpu().clamp(0.0, 1.0)
    if scale > 1:
        img = img.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    array = (img * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    Image.fromarray(array).save(os.fspath(path), format="PNG")
