"""gFID's sampling noise against the number of generated samples, for one trained digits probe.

Trains the digits study's autoencoder ``ae`` (its recipe and seed 0) and ``--seeds`` probes of it
(the study's probe recipe, seeds 0, 1, ...), each sampled ``--max-samples`` times (Euler, 25
steps) through :func:`~ifid_callback.probes.study.run_study` (cached: a second run only prints).
Then, for each count n of 1k, 2k, 5k, 10k, 20k and each seed, from the first n samples:

- ``gFID``: against the 1400 training digits (the study's primary reference), digit features;
- ``SE``: its influence-function standard error over the generated samples, reference fixed
  (:func:`~ifid_callback.probes.gfid_error.gfid_influence`);
- ``blk sd``: the spread of gFID over disjoint blocks of n of the same probe's samples (an
  empirical check of SE, where at least 2 blocks fit);
- ``bias``: mean gFID over those blocks minus gFID of all samples (FID is biased upwards at
  small n; the largest count stands in for infinity);
- ``seed sd``: the spread of gFID over the probe seeds at n (probe training plus sampling).

Two rules for the default count are printed. The seed-spread rule (SE at most a third of the
seed spread at the same n) can only be met where probe training adds noise of its own: the seed
spread is ``sqrt(probe^2 + SE^2)``, so its probe part is estimated at the largest count. The
VAE-spread rule takes the smallest n whose SE is at most a third of the gFID spread across the
natural digits VAEs (``--between-vae-sd``, measured as means of ``--between-vae-seeds`` probes at
1k samples in ``docs/results/digits``; the 1k sampling variance of such a mean, ``SE(1k)^2 /
seeds`` from this run, is taken out first).

With ``--pair NAME`` (a positive-control member of the digits zoo, e.g. ``ae-warp0.5``) it then
runs a two-VAE study of ``ae`` and that member (``--pair-seeds`` probe seeds, the same sample
count, ``ae``'s probes reused from the cache) and prints the paired gFID difference per seed: its
paired standard error (common random numbers: sample j of both VAEs starts from the same noise)
against the independent one.

    python bench/bench_gfid_samples.py [--out runs/gfid_samples] [--seeds 3] [--pair ae-warp0.5]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

COUNTS = (1000, 2000, 5000, 10000, 20000)


def run(out: Path, seeds: int, max_samples: int) -> None:
    from ifid_callback.probes.digit_features import digit_features
    from ifid_callback.probes.digits_study import (
        DigitsStudySettings,
        digits_member,
        digits_study_config,
        train_digits_vae,
    )
    from ifid_callback.probes.study import run_study

    settings = DigitsStudySettings(
        out=str(out), probe_seeds=seeds, num_samples=max_samples, t_grid=[], ablation=[]
    )
    feat = digit_features()
    path = train_digits_vae(digits_member("ae"), settings, out / "zoo", feat, settings.seed, False)
    zoo = {"specs": [str(path)], "names": ["ae"], "groups": {}}
    config = digits_study_config(settings, zoo)
    run_study(config, feature=feat, progress=False, report=False, log=print)


def pair(out: Path, name: str, seeds: int, max_samples: int) -> dict:
    from ifid_callback.probes.digit_features import digit_features
    from ifid_callback.probes.digits_study import (
        DigitsStudySettings,
        digits_study_config,
        wrap_digits_control,
    )
    from ifid_callback.probes.study import run_study

    settings = DigitsStudySettings(
        out=str(out), probe_seeds=seeds, num_samples=max_samples, t_grid=[], ablation=[]
    )
    path, _ = wrap_digits_control(name, out / "zoo" / "ae.ckpt", out / "zoo")
    zoo = {"specs": [str(out / "zoo" / "ae.ckpt"), str(path)], "names": ["ae", name], "groups": {}}
    config = digits_study_config(settings, zoo)
    result = run_study(config, feature=digit_features(), progress=False, report=True, log=print)
    report = json.loads((out / "report" / "results.json").read_text())
    return {"rows": result["vaes"], "pairs": report["analysis"]["gfid_pairs"]}


def show_pair(found: dict) -> None:
    for row in found["rows"]:
        per = " / ".join(
            f"{v:.2f} ± {se:.2f}" for v, se in zip(row["gfid_seeds"], row["gfid_se_seeds"])
        )
        print(f"{row['name']}: gFID per seed {per}; seed sd {row['gfid_seed_std']:.3f}")
    for p in found["pairs"]:
        per = " / ".join(
            f"{d:+.2f} ± {se:.2f}" for d, se in zip(p["difference_seeds"], p["se_seeds"])
        )
        print(
            f"{p['a']} - {p['b']}: {p['difference']:+.3f}; per seed (paired SE) {per}; "
            f"paired SE of the mean {p['sampling_se']:.3f}, independent SE "
            f"{p['independent_se']:.3f}, SE over seeds "
            f"{'-' if p['seed_se'] is None else format(p['seed_se'], '.3f')}"
        )


def extend(out: Path, count: int, seeds: int) -> list[dict]:
    """Sample ``count`` from probes ``0..seeds-1`` again (same noise: the first samples are the
    study's), for gFID, SE and bias at a count beyond the study's."""
    from ifid_callback.probes.digit_features import digit_features
    from ifid_callback.probes.gfid import generated_features
    from ifid_callback.probes.gfid_error import gfid_influence
    from ifid_callback.probes.probe_seed import sampling_seed
    from ifid_callback.probes.trained_probe import TrainedProbe
    from ifid_callback.probes.zoo import load_vae_checkpoint
    from ifid_callback.vae import VAEAdapter

    ref = np.load(out / "real" / "reference_features.npy")
    adapter = VAEAdapter(vae=load_vae_checkpoint(out / "zoo" / "ae.ckpt").eval())
    feat = digit_features()
    found = []
    for s in range(seeds):
        path = out / "vaes" / "ae" / ("extra.npy" if s == 0 else f"extra_s{s}.npy")
        if not (path.exists() and len(np.load(path, mmap_mode="r")) == count):
            probe = TrainedProbe.load(
                out / "vaes" / "ae" / ("probe" if s == 0 else f"probe_s{s}") / "probe.pt"
            )

            def decode(z: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return adapter.decode(z).float().clamp(-1.0, 1.0)

            feats, _ = generated_features(
                probe, decode, feat, count, batch_size=500, steps=25, seed=sampling_seed(0, s)
            )
            np.save(path, feats)
        feats = np.load(path)
        study = np.load(
            out
            / "vaes"
            / "ae"
            / ("features_samples.npy" if s == 0 else f"features_samples_s{s}.npy")
        )
        same = bool(np.array_equal(feats[: len(study)], study))
        full = gfid_influence(feats, ref)
        halves = [float(gfid_influence(feats[i : i + 20000], ref).value) for i in (0, 20000)]
        found.append(
            {
                "seed": s,
                "n": count,
                "gfid": float(full.value),
                "se": full.std_error,
                "gfid_20k_blocks": halves,
                "prefix_equals_study": same,
            }
        )
    return found


def table(out: Path, seeds: int) -> dict:
    from ifid_callback.probes.gfid_error import gfid_influence

    ref = np.load(out / "real" / "reference_features.npy")
    vae = out / "vaes" / "ae"
    feats = [
        np.load(vae / ("features_samples.npy" if s == 0 else f"features_samples_s{s}.npy"))
        for s in range(seeds)
    ]
    largest = min(len(f) for f in feats)
    counts = [n for n in COUNTS if n <= largest]
    full = [float(gfid_influence(f[:largest], ref).value) for f in feats]
    rows = []
    for n in counts:
        first = [gfid_influence(f[:n], ref) for f in feats]
        blocks = [
            [float(gfid_influence(f[i : i + n], ref).value) for i in range(0, largest - n + 1, n)]
            for f in feats
        ]
        gf = [float(g.value) for g in first]
        rows.append(
            {
                "n": n,
                "gfid": gf,
                "se": [g.std_error for g in first],
                "se_reference": [g.std_error_reference for g in first],
                "block_sd": [float(np.std(b, ddof=1)) if len(b) > 1 else None for b in blocks],
                "bias": float(np.mean([np.mean(b) - full[s] for s, b in enumerate(blocks)])),
                "block_mean": [float(np.mean(b)) for b in blocks],
                "seed_sd": float(np.std(gf, ddof=1)) if seeds > 1 else None,
            }
        )
    return {"rows": rows, "largest": largest, "gfid_full": full, "seeds": seeds}


def rules(res: dict, between_sd: float, between_seeds: int) -> dict:
    rows = res["rows"]
    se = {r["n"]: float(np.mean(r["se"])) for r in rows}
    seed_rule = next(
        (r["n"] for r in rows if r["seed_sd"] and se[r["n"]] <= r["seed_sd"] / 3), None
    )
    last = rows[-1]
    probe_sq = (last["seed_sd"] or 0.0) ** 2 - se[last["n"]] ** 2
    corrected = math.sqrt(max(0.0, between_sd**2 - se[rows[0]["n"]] ** 2 / between_seeds))
    vae_rule = next((r["n"] for r in rows if se[r["n"]] <= corrected / 3), None)
    probe = math.sqrt(probe_sq) if probe_sq > 0 else 0.0
    # SE falls as 1/sqrt(n): the count where SE = seed sd / 3 with seed sd = sqrt(probe^2 + SE^2),
    # i.e. SE = probe / sqrt(8).
    needed = last["n"] * (se[last["n"]] * math.sqrt(8) / probe) ** 2 if probe > 0 else math.inf
    return {
        "seed_rule": seed_rule,
        "seed_rule_extrapolated": needed,
        "probe_part": probe,
        "between_vae_sd": between_sd,
        "between_vae_sd_corrected": corrected,
        "vae_rule": vae_rule,
    }


def show(res: dict) -> None:
    def f(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    print(
        f"digits `ae`, {res['seeds']} probe seeds, reference 1400 training digits, "
        f"digit-classifier features (d=64); largest count {res['largest']}"
    )
    print(
        "| n | gFID per seed | mean gFID | SE (mean over seeds) | blk sd (mean) | bias vs largest "
        "| seed sd | SE ref. term |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        blk = [b for b in r["block_sd"] if b is not None]
        print(
            f"| {r['n']} | {' / '.join(f'{g:.2f}' for g in r['gfid'])} | {np.mean(r['gfid']):.3f} "
            f"| {np.mean(r['se']):.3f} | {f(float(np.mean(blk)) if blk else None)} "
            f"| {r['bias']:+.3f} | {f(r['seed_sd'])} | {np.mean(r['se_reference']):.3f} |"
        )
    r = res["rules"]
    print(
        f"seed-spread rule (smallest n with SE <= seed sd / 3 at that n): {r['seed_rule']}; "
        f"probe part of the seed spread at the largest count: "
        f"sqrt(max(0, seed sd^2 - SE^2)) = {r['probe_part']:.3f}; SE ~ 1/sqrt(n) meets the "
        f"seed-spread rule (SE <= probe part / sqrt(8)) from n = {r['seed_rule_extrapolated']:.0f}"
    )
    print(
        f"VAE-spread rule: natural-family gFID sd {r['between_vae_sd']:.2f}, "
        f"{r['between_vae_sd_corrected']:.2f} without its 1k sampling noise; smallest n with "
        f"SE <= {r['between_vae_sd_corrected'] / 3:.2f}: {r['vae_rule']}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gfid_samples")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-samples", type=int, default=max(COUNTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--between-vae-sd", type=float, default=3.52)
    p.add_argument("--pair", default=None, help="a positive-control member, e.g. ae-warp0.5")
    p.add_argument("--pair-seeds", type=int, default=2)
    p.add_argument("--extra-count", type=int, default=0, help="e.g. 50000: beyond the study")
    p.add_argument("--extra-seeds", type=int, default=2)
    p.add_argument("--between-vae-seeds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.time()
    run(out, args.seeds, args.max_samples)
    print(f"[study {time.time() - started:.0f}s]")
    res = table(out, args.seeds)
    res["rules"] = rules(res, args.between_vae_sd, args.between_vae_seeds)
    (out / "gfid_samples.json").write_text(json.dumps(res, indent=2))
    show(res)
    if args.extra_count:
        extra = extend(out, args.extra_count, args.extra_seeds)
        (out / "gfid_extra.json").write_text(json.dumps(extra, indent=2))
        for e in extra:
            print(
                f"seed {e['seed']}: n={e['n']} gFID {e['gfid']:.3f} SE {e['se']:.3f}; two 20k "
                f"blocks {e['gfid_20k_blocks'][0]:.2f} / {e['gfid_20k_blocks'][1]:.2f}; first "
                f"samples equal the study's: {e['prefix_equals_study']}"
            )
        if len(extra) > 1:
            values = [e["gfid"] for e in extra]
            print(
                f"n={args.extra_count} over {len(extra)} seeds: mean gFID {np.mean(values):.3f}, "
                f"seed sd {np.std(values, ddof=1):.3f}, SE {np.mean([e['se'] for e in extra]):.3f}"
            )
    if args.pair:
        found = pair(out, args.pair, args.pair_seeds, args.max_samples)
        (out / "gfid_pair.json").write_text(json.dumps(found, indent=2, default=str))
        show_pair(found)


if __name__ == "__main__":
    main()
