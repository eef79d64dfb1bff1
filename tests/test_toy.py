"""The paper's toy (Section 3.4): connected latents interpolate inside the data, isolated ones do not."""

import math

import torch

from ifid_callback import InterpolatedFID, LatentBank


class GridFeatures(torch.nn.Module):
    """A fixed feature map of 2-D points that sees where a point sits inside a grid cell."""

    num_features = 6

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        x, y = p[:, 0, 0, 0], p[:, 1, 0, 0]
        two_pi = 2 * math.pi
        return torch.stack(
            [
                x,
                y,
                torch.cos(two_pi * x),
                torch.cos(two_pi * y),
                torch.sin(two_pi * x),
                torch.sin(two_pi * y),
            ],
            1,
        )


def mixture_ifid(std: float, draws: int = 12) -> float:
    """25 components on a 5x5 grid (spacing 1); each draw holds one point per component, and each
    point's neighbour comes from the other points of its draw (the bank), never itself."""
    g = torch.Generator().manual_seed(0)
    centers = (
        torch.stack(
            torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij"), -1
        ).reshape(25, 2)
        - 2
    )
    identity = lambda t: t  # noqa: E731  (identity encoder and decoder on 2-D points)
    bank = LatentBank(capacity=25)
    metric = InterpolatedFID(
        encoder=identity,
        decoder=identity,
        feature=GridFeatures(),
        bank=bank,
        interpolation="linear",
        alpha=0.5,
        input_range=(-10.0, 10.0),
    )
    for _ in range(draws):
        points = (centers + std * torch.randn(25, 2, generator=g)).reshape(25, 2, 1, 1)
        bank.clear()
        ids = bank.add(points)
        metric.update(points, ids=ids)
    return float(metric.compute()["ifid"])


def test_connected_mixture_has_lower_ifid_than_isolated_grid():
    isolated = mixture_ifid(std=0.05)
    connected = mixture_ifid(std=0.6)
    assert connected < isolated
    assert isolated > 3 * connected
