"""Evaluate a diffusers VAE (AutoencoderKL and friends) on a folder of images: iFID and rFID.

    python examples/evaluate_diffusers_vae.py --vae stabilityai/sd-vae-ft-mse --images photos/ --size 256
    python examples/evaluate_diffusers_vae.py --vae ./my_vae_dir --images photos/ --reference train_photos/

``--vae`` is a local directory written by ``save_pretrained`` (``config.json`` + weights) or a hub id
(then diffusers downloads it, because you asked). Each query image's latent is interpolated with its
nearest neighbour (in the ``--reference`` folder's latents, or among the queries themselves), decoded,
and compared with the real images by FID on the standard Inception features (offline weights).
``ifid eval`` does the same from the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ifid_callback.data import ImageFolder
from ifid_callback.evaluate import evaluate_vae
from ifid_callback.loading import load_vae


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--vae", required=True, help="diffusers model directory or hub id")
    p.add_argument("--subfolder", default=None, help="e.g. 'vae' inside a pipeline repository")
    p.add_argument("--images", required=True, type=Path, help="folder of query images")
    p.add_argument("--reference", type=Path, default=None, help="folder of the neighbour bank")
    p.add_argument("--num-images", type=int, default=None, help="at most this many queries")
    p.add_argument("--size", type=int, default=None, help="resize + center-crop to SIZE")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--interpolation", default="slerp", choices=("slerp", "linear", "mask"))
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="cheap random features instead of Inception: checks the pipeline, numbers are not FID",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    vae = load_vae(args.vae, device=args.device, subfolder=args.subfolder)
    print(f"loaded {type(vae).__name__} from {args.vae}")

    queries = ImageFolder(args.images, size=args.size)
    if args.num_images is not None:
        queries = Subset(queries, range(min(args.num_images, len(queries))))
    reference = None
    if args.reference is not None:
        reference = DataLoader(
            ImageFolder(args.reference, size=args.size), batch_size=args.batch_size
        )

    if args.smoke:
        from ifid_callback.demo import SmokeFeatures

        feature = SmokeFeatures()
    else:
        feature = "inception"
    result = evaluate_vae(
        vae,
        DataLoader(queries, batch_size=args.batch_size),
        reference,
        feature=feature,
        interpolation=args.interpolation,
        alpha=args.alpha,
        k=args.k,
        device=args.device,
    )
    label = "smoke features, not FID" if args.smoke else "Inception FID"
    print(
        f"iFID {result['ifid']:.3f}  rFID {result['rfid']:.3f}  ({label}; "
        f"{result['num_images']} images, bank of {result['bank_size']} latents)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
