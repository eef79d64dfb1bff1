"""Pilot of the digits study: time each stage on this machine and project the full run.

Trains the autoencoder of the zoo for a few steps, one probe for a few steps, samples, and
regenerates, each timed in wall and process CPU time, then prints the projected duration of
``ifid-probe study --dataset digits`` with the given settings (18 VAEs: 11 trained, 7 wrapped;
``--probe-seeds`` probes each). It measures cost only: no correlation is computed.

    python bench/bench_digits_study.py [--probe-steps 3000] [--depth 3] [--hidden 96]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    from ifid_callback.data import EmbeddedDigits
    from ifid_callback.probes.digit_features import digit_features
    from ifid_callback.probes.digits_study import (
        DIGITS_FAMILY_A,
        DIGITS_FAMILY_B,
        DIGITS_FAMILY_C,
        DigitsStudySettings,
        train_digits_vae,
    )
    from ifid_callback.probes.gfid import fid_from_features
    from ifid_callback.probes.train import ProbeTrainConfig, train_probe
    from ifid_callback.probes.zoo import load_vae_checkpoint

    defaults = DigitsStudySettings(out="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    p.add_argument("--probe-steps", type=int, default=defaults.probe_steps)
    p.add_argument("--depth", type=int, default=defaults.probe_overrides["depth"])
    p.add_argument("--hidden", type=int, default=defaults.probe_overrides["hidden_size"])
    p.add_argument("--heads", type=int, default=defaults.probe_overrides["num_heads"])
    p.add_argument("--probe-batch-size", type=int, default=defaults.probe_batch_size)
    p.add_argument("--patch-size", type=int, default=defaults.patch_size)
    p.add_argument("--base-channels", type=int, default=defaults.base_channels)
    p.add_argument("--probe-seeds", type=int, default=defaults.probe_seeds)
    p.add_argument("--num-samples", type=int, default=defaults.num_samples)
    p.add_argument("--sampling-steps", type=int, default=defaults.sampling_steps)
    p.add_argument("--timed-vae-steps", type=int, default=200)
    p.add_argument("--timed-probe-steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    images = EmbeddedDigits("train").as_tensor()
    held_out = EmbeddedDigits("val").as_tensor()
    feat = digit_features()
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        clock = _Clock()
        timed = dataclasses.replace(
            defaults, out=tmp, vae_steps=args.timed_vae_steps, base_channels=args.base_channels
        )
        path = train_digits_vae(DIGITS_FAMILY_A[0], timed, Path(tmp), feat, seed=0, progress=False)
        wall, cpu = clock.read()
        vae_step = wall / args.timed_vae_steps
        rows.append(("VAE step (batch 64)", vae_step, cpu / args.timed_vae_steps, "s"))
        vae = load_vae_checkpoint(path)
        with torch.no_grad():
            z = vae.encode(images).mean
        cfg = ProbeTrainConfig(
            size="tiny",
            patch_size=args.patch_size,
            steps=args.timed_probe_steps,
            batch_size=args.probe_batch_size,
            lr=defaults.probe_lr,
            ema_decay=defaults.probe_ema,
            model_overrides={
                "depth": args.depth,
                "hidden_size": args.hidden,
                "num_heads": args.heads,
            },
            time_shift=None,
        )
        clock = _Clock()
        probe = train_probe(z, None, cfg, progress=False)
        wall, cpu = clock.read()
        probe_step = wall / args.timed_probe_steps
        rows.append(("probe step", probe_step, cpu / args.timed_probe_steps, "s"))
        params = sum(q.numel() for q in probe.model.parameters())
        n_timed = 200
        clock = _Clock()
        with torch.no_grad():
            lat = probe.sample(n_timed, steps=args.sampling_steps, batch_size=200)
            feats = feat(vae.decode(lat).clamp(-1, 1)).numpy()
        wall, cpu = clock.read()
        per_sample = wall / n_timed
        rows.append(("sample + decode + feature", per_sample, cpu / n_timed, "s/sample"))
        clock = _Clock()
        fid_from_features(feats, feat(held_out).numpy())
        wall, cpu = clock.read()
        rows.append(("one FID (64-d)", wall, cpu, "s"))

    n_trained = len(DIGITS_FAMILY_A) + len(DIGITS_FAMILY_C)
    n_vaes = n_trained + len(DIGITS_FAMILY_B)
    n_probes = n_vaes * args.probe_seeds
    t_grid = defaults.t_grid
    vae_total = n_trained * args.vae_steps * vae_step
    probe_total = n_probes * args.probe_steps * probe_step
    # gFID samples, plus gFID(t): 397 held-out latents per t at round(steps * t) steps.
    regen = sum(397 * max(1, round(args.sampling_steps * t)) / args.sampling_steps for t in t_grid)
    sample_total = n_probes * (args.num_samples + regen) * per_sample
    ablation_total = n_vaes * (len(defaults.ablation) + 1) * 397 * 2e-4
    total = vae_total + probe_total + sample_total + ablation_total
    print(
        f"probe: depth {args.depth}, width {args.hidden}, patch {args.patch_size}, batch "
        f"{args.probe_batch_size}, {params / 1e3:.0f}K parameters; {args.threads} thread(s)"
    )
    print()
    print("| stage | wall | process CPU | unit |")
    print("|---|---|---|---|")
    for name, wall, cpu, unit in rows:
        print(f"| {name} | {wall:.4f} | {cpu:.4f} | {unit} |")
    print()
    print(f"projected full study ({n_vaes} VAEs, {n_probes} probes):")
    projection = {
        "VAEs": vae_total,
        "probes": probe_total,
        "sampling": sample_total,
        "iFID + ablations (estimate)": ablation_total,
        "total": total,
    }
    for k, v in projection.items():
        print(f"  {k}: {v / 60:.1f} min")
    print(f"  per probe: {args.probe_steps * probe_step:.0f} s training")
    print(json.dumps({k: round(float(v), 1) for k, v in projection.items()}))


if __name__ == "__main__":
    main()
