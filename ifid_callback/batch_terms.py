"""What one batch adds to a metric: the sums and rows of one pass, computed before any state
changes (the metric applies them only once the whole batch went through)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ifid_callback import fid_state
from ifid_callback import interpolation_pass as step
from ifid_callback.image_checks import check_latents_fit_bank
from ifid_callback.pixel_identity import pixel_digests


def update_terms(
    metric: Any, images: Tensor, ids: Tensor | None, positions: Tensor
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The increments of the sums and the rows to append for one batch (no state changes)."""
    z = metric._encode(images, positions)
    bank = metric.reference.bank
    if bank is not None and len(bank):
        check_latents_fit_bank(tuple(images.shape[-2:]), tuple(z.shape[1:]), bank.latent_shape)
    new: dict[str, Tensor] = latent_terms(metric, z, images)
    rows: dict[str, Tensor] = {}
    need_rows = metric._per_image and not metric._rows_cached
    if not metric._real_cached or need_rows:
        f_real = step.features(metric.feature_net, images, metric.num_features, metric.input_range)
        if not metric._real_cached:
            new.update(fid_state.feature_sums("real", f_real))
        if need_rows:
            rows["real_feature_rows"] = f_real.to(torch.float32)
            rows["real_row_positions"] = positions
    if not metric._extra_real_cached:  # the further feature spaces' real statistics
        for extra in metric.extras.values():
            if extra.scores_decodes:
                new.update(extra.score_real(images))
    if metric._per_image or metric.reference.is_self:
        rows["query_positions"] = positions
    z_nn = None
    if metric.reference.is_self:  # interpolants at compute(); reconstructions now
        rows["query_latents"] = z.detach().to(torch.float32).reshape(z.shape[0], -1)
        rows["query_digests"] = pixel_digests(images)  # copies of one image: one id at compute
        metric._latent_shape = tuple(z.shape[1:])
        if not metric.compute_rfid:
            return new, rows
    else:
        z_nn, _, steps = step.neighbor_rows(
            metric.reference, z, metric.k, metric.pick, ids, metric._generators(positions, "pick")
        )
        rows["neighbor_steps"] = steps
    found, found_rows = decoded_terms(metric, z, z_nn, positions, images)
    if z_nn is not None and not metric._scale_warned:
        # After the decode: the scale check learns only from batches that went through.
        metric._scale_warned = metric.reference.warn_if_scale_differs(
            z, metric.vae.sample_posterior
        )
    new.update(found)
    rows.update(found_rows)
    return new, rows


def decoded_terms(
    metric: Any, z: Tensor, z_nn: Tensor | None, positions: Tensor, images: Tensor | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Decode the interpolants (with ``z_nn``) and, with the query ``images`` and
    ``compute_rfid``, the reconstructions in one call; features in one pass of each feature
    network; the sums and per-image rows (and the extras' scores) they give."""
    with_recon = images is not None and metric.compute_rfid
    channels = images.shape[1] if images is not None else metric._channels
    decoded = step.decode_batch(
        metric.vae,
        z,
        z_nn,
        interpolation=metric.interpolation,
        alpha=metric.alpha,
        generator=metric._generators(positions, "mask"),
        with_recon=with_recon,
        channels=channels,
        input_range=metric.input_range,
        clamp=metric._clamp_decodes,
    )
    feats = step.features(metric.feature_net, decoded, metric.num_features, metric.input_range)
    batch, sums, rows = z.shape[0], {}, {}
    parts = {"recon": slice(0, batch)} if with_recon else {}
    if z_nn is not None:
        parts["interp"] = slice(decoded.shape[0] - batch, decoded.shape[0])
    for name, part in parts.items():
        sums.update(fid_state.feature_sums(name, feats[part]))
        if metric._per_image:
            rows[f"{name}_feature_rows"] = feats[part].to(torch.float32)
    for extra in metric.extras.values():
        if extra.scores_decodes:
            sums.update(extra.score_decodes({name: decoded[part] for name, part in parts.items()}))
    if with_recon:
        recon = decoded[:batch].clamp(*metric.input_range)  # scored as shown, in every mode
        targets = images.detach().clamp(*metric.input_range)
        for extra in metric.extras.values():
            if extra.scores_reconstructions:
                sums.update(extra.score(recon, targets))
    return sums, rows


def latent_terms(metric: Any, z: Tensor, images: Tensor) -> dict[str, Tensor]:
    """The scores of the extras that look at the query latents ``z`` (the iFID encode)."""
    scorers = [extra for extra in metric.extras.values() if extra.scores_latents]
    if not scorers:
        return {}
    targets = images.detach().clamp(*metric.input_range)

    def decode(latents: Tensor) -> Tensor:
        return step.decode(metric.vae, latents, images.shape[1], metric.input_range)

    sums: dict[str, Tensor] = {}
    for extra in scorers:
        sums.update(extra.score_latents(z, targets, decode))
    return sums
