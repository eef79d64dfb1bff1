"""The authors' mask interpolation: the top half of the latent rows from the neighbour."""

import pytest
import torch

from ifid_callback import InterpolatedFID
from ifid_callback.functional import INTERPOLATIONS, interpolate
from ifid_callback.settings import resolve_settings
from tests.helpers import RandomFeatures, decode, encode, smooth_images


def _pair(shape):
    z = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
    return z, -z - 1  # every entry of the neighbour differs from z's, and says where it was


def test_image_latents_take_the_top_rows_of_every_channel_from_the_neighbour():
    # (B, C, H, W) = (1, 2, 4, 3): rows 0 and 1 of both channels from the neighbour.
    z, n = _pair((1, 2, 4, 3))
    out = interpolate(z, n, "mask_top_half")
    expected = torch.tensor(
        [
            [
                [[-1, -2, -3], [-4, -5, -6], [6, 7, 8], [9, 10, 11]],
                [[-13, -14, -15], [-16, -17, -18], [18, 19, 20], [21, 22, 23]],
            ]
        ],
        dtype=torch.float32,
    )
    assert torch.equal(out, expected)


def test_odd_height_gives_the_neighbour_the_smaller_half():
    # H = 5: H // 2 = 2 rows from the neighbour, 3 kept.
    z, n = _pair((2, 1, 5, 2))
    out = interpolate(z, n, "mask_top_half")
    from_neighbour = (out < 0)[:, 0, :, 0]
    assert from_neighbour.tolist() == [[True, True, False, False, False]] * 2
    assert torch.equal(out[:, :, :2], n[:, :, :2]) and torch.equal(out[:, :, 2:], z[:, :, 2:])


def test_token_and_vector_latents_split_along_their_first_dimension():
    # (B, L, D) = (1, 3, 2): token 0 (L // 2 = 1) from the neighbour, all its features.
    z, n = _pair((1, 3, 2))
    expected = torch.tensor([[[-1, -2], [2, 3], [4, 5]]], dtype=torch.float32)
    assert torch.equal(interpolate(z, n, "mask_top_half"), expected)
    # (B, D) = (2, 5): entries 0 and 1.
    z, n = _pair((2, 5))
    expected = torch.tensor([[-1, -2, 2, 3, 4], [-6, -7, 7, 8, 9]], dtype=torch.float32)
    assert torch.equal(interpolate(z, n, "mask_top_half"), expected)


def test_alpha_and_generator_are_ignored_and_dtype_kept():
    g = torch.Generator().manual_seed(0)
    z, n = torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)
    base = interpolate(z, n, "mask_top_half", 0.5)
    for alpha in (0.0, 0.2, 1.0):
        assert torch.equal(interpolate(z, n, "mask_top_half", alpha), base)
    seeded = interpolate(z, n, "mask_top_half", 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(seeded, base)
    half = interpolate(z.half(), n.half(), "mask_top_half")
    assert half.dtype == torch.float16 and torch.equal(half, base.half())
    with pytest.raises(ValueError, match="alpha"):
        interpolate(z, n, "mask_top_half", 1.5)
    with pytest.raises(ValueError, match="use interpolation='mask'"):
        interpolate(z[:, :, None], n[:, :, None], "mask_top_half")


def test_the_metric_accepts_it_by_name_with_the_cosine_search():
    assert "mask_top_half" in INTERPOLATIONS and "mask" in INTERPOLATIONS
    settings = resolve_settings(interpolation="mask_top_half")
    assert settings["interpolation"] == "mask_top_half" and settings["distance"] == "cosine"
    metric = InterpolatedFID(
        encoder=encode,
        decoder=decode,
        feature=RandomFeatures(3 * 8 * 8),
        interpolation="mask_top_half",
        bank=None,
    )
    images = smooth_images(16, seed=3)
    metric.update(images)
    out = metric.compute()
    assert torch.isfinite(out["ifid"]) and float(out["ifid"]) > 0


def test_every_interpolation_is_offered_by_the_commands():
    from ifid_callback import cli, demo_args
    from ifid_callback.functional.interpolation import INTERPOLATIONS

    for parser in (cli.build_parser(), demo_args.build_parser()):
        actions = [parser]
        choices = set()
        while actions:
            item = actions.pop()
            for action in getattr(item, "_actions", []):
                if "--interpolation" in action.option_strings:
                    choices = set(action.choices)
                if hasattr(action, "choices") and isinstance(action.choices, dict):
                    actions.extend(action.choices.values())  # subcommands
        assert choices == set(INTERPOLATIONS)
