"""iFID and rFID under the two paths from decoder output to Inception: the README's comparison table.

One example, two VAEs (a small diffusers ``AutoencoderKL`` with seeded random weights, and the
same briefly trained on the embedded photo patches), 128 query and 128 reference 64x64 patches,
the real Inception weights (offline). Each VAE is measured with the default protocol (posterior
mean, top-1 cosine, slerp 0.5) under ``preprocessing="standard"`` and ``"official"``, and with
``preset="paper"`` (which runs ``"official"``). Prints a markdown table and the relative gaps.

Run: ``python bench/bench_preprocessing.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import time

import torch

from ifid_callback import InterpolatedFID, LatentBank
from ifid_callback.data import EmbeddedPatches
from ifid_callback.tiny_vae import small_autoencoder_kl

N = 128
TRAIN_STEPS = 150


def small_vae(seed: int) -> torch.nn.Module:
    return small_autoencoder_kl(seed).eval()


def train(vae: torch.nn.Module, images: torch.Tensor, steps: int, seed: int) -> torch.nn.Module:
    """A few hundred Adam steps of MSE + 1e-6 KL: a VAE whose decodes resemble the images."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    vae.train()
    for _ in range(steps):
        x = images[torch.randint(len(images), (16,), generator=g)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        loss = (recon - x).pow(2).mean() + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae.eval()


def measure(vae, queries, reference, **options) -> dict[str, float]:
    sample = options.get("preset") == "paper"
    bank = LatentBank(capacity=len(reference))
    with torch.no_grad():
        posterior = vae.encode(reference).latent_dist
        # The paper's protocol fills the reference with posterior samples, as it draws the queries.
        bank.add(posterior.sample(generator=torch.Generator().manual_seed(1)) if sample
                 else posterior.mean)  # fmt: skip
    metric = InterpolatedFID(vae=vae, bank=bank, uncertainty=False, **options)
    with torch.no_grad():
        for batch in queries.split(32):
            metric.update(batch)
        out = metric.compute()
    return {"ifid": float(out["ifid"]), "rfid": float(out["rfid"])}


def main() -> None:
    torch.set_num_threads(2)
    queries = EmbeddedPatches("val", size=64, max_items=N, seed=0).as_tensor()
    train_set = EmbeddedPatches("train", size=64)
    reference = train_set.as_tensor()[torch.randperm(len(train_set))[:N]]
    start = time.perf_counter()
    vaes = {
        "random weights": small_vae(0),
        f"trained {TRAIN_STEPS} steps": train(small_vae(0), train_set.as_tensor(), TRAIN_STEPS, 0),
    }
    print(f"trained in {time.perf_counter() - start:.0f} s")
    runs = {
        "standard (default)": dict(preprocessing="standard"),
        "official": dict(preprocessing="official"),
        'preset="paper"': dict(preset="paper"),
    }
    print("| VAE | pipeline | iFID | rFID |")
    print("|---|---|---|---|")
    found = {}
    for vae_name, vae in vaes.items():
        for run_name, options in runs.items():
            found[vae_name, run_name] = r = measure(vae, queries, reference, **options)
            print(f"| {vae_name} | {run_name} | {r['ifid']:.2f} | {r['rfid']:.2f} |", flush=True)
    for vae_name in vaes:
        std, off = found[vae_name, "standard (default)"], found[vae_name, "official"]
        gaps = [100 * (off[key] / std[key] - 1) for key in ("ifid", "rfid")]
        print(f"{vae_name}: official vs standard iFID {gaps[0]:+.2f} %, rFID {gaps[1]:+.2f} %")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
