"""What a report says first about its learned models: how they were made, at what scale,
and where they stand against the classical codecs of the same run.

The facts come from the model cards (:func:`model_points`, kept in ``run.json``'s ``models``
so that the report of a run can be rebuilt without its model folders) and the standing from the run's own results: BD-rate on PSNR-RGB of each
learned curve against each classical curve, mean curves over the dataset's images
(PCHIP, the report's method). A model trained for fewer steps than the paper's recipe
is called demo scale, so nobody reads a demo curve as 3DM-WeConvene's published result.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.codecs.curve import curve_cards
from harness.data.manifest import require_manifest
from harness.errors import HarnessError
from harness.paper import PAPER_ITERATIONS, PAPER_STAGE2_STEPS
from harness.report.bdrate import bd_rate, per_image_curves
from harness.report.tables import curve_labels, markdown_table

PAPER_PLAN = "schedule/paper.toml"
PAPER_STEPS = PAPER_ITERATIONS + PAPER_STAGE2_STEPS  # a model trained this long is at the paper's scale


def _describe(shards: str) -> str:
    """The training data of a shard folder, in words."""
    try:
        manifest = require_manifest(Path(shards))
        totals = manifest.totals
        return (f"{totals['train_patches']} training patches of {manifest.patch}x{manifest.patch} from "
                f"{totals['images']} images ({', '.join(manifest.per_source) or ', '.join(manifest.sources)})")
    except (HarnessError, KeyError):
        return f"shards {shards} (no longer readable)"


def model_points(models_dir: Path) -> list[dict[str, Any]]:
    """How each model of ``models_dir`` was made, from its card: one dict per point, ``curve``
    being the leaderboard's ``codec:config``."""
    describe = functools.cache(_describe)  # every λ of a sweep shares one shard folder: read it once
    points = []
    for curve, cards in curve_cards(models_dir).items():
        for card in cards:
            warmup, published = card.warmup, card.published
            points.append({
                "curve": curve, "variant": card.variant, "metric": card.metric, "lambda": card.lmbda,
                "params": card.params, "steps": card.steps,
                "batch_size": card.batch_size, "patch": card.patch, "train_s": card.train_s, "device": card.device,
                "warmup_s": (warmup.train_s or 0.0) if warmup else 0.0, "warmup_steps": warmup.steps if warmup else 0,
                # Imported weights name where they come from instead of training data.
                "imported": (f"{published.source}: {published.architecture} quality {published.quality}"
                             if published else ""),
                "data": "" if published else describe(card.data), **card.final,
            })
    return points


def _models_table(points: pd.DataFrame) -> str:
    rows = []
    for curve, group in points.groupby("curve", sort=True):
        imported = sorted(set(group["imported"]) - {""})
        if imported:
            rows.append([f"`{curve}`", f"`{group['variant'].iloc[0]}`", f"{group['params'].max() / 1e6:.2f} M",
                         ", ".join(f"{v:g}" for v in group["lambda"]), "imported weights: " + "; ".join(imported),
                         "not trained here", "-"])
            continue
        steps = sorted(set(group["steps"]))
        # A shared warm-up counts in each model's own minutes, and once in the curve's total.
        minutes = (group["train_s"] + group["warmup_s"]) / 60.0
        total = (group["train_s"].sum() + group["warmup_s"].max()) / 60.0
        shapes = sorted({f"{b} x {p}²" for b, p in zip(group["batch_size"], group["patch"])})
        step_text = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,}"
        shared = int(group["warmup_steps"].max())
        if shared:
            step_text += f", the first {shared:,} a shared warm-up"
        rows.append([
            f"`{curve}`", f"`{group['variant'].iloc[0]}`", f"{group['params'].max() / 1e6:.2f} M",
            ", ".join(f"{v:g}" for v in group["lambda"]), f"{step_text} ({', '.join(shapes)})",
            (f"{minutes.mean():.1f} min per model ({total:.1f} in all) on "
             f"{', '.join(sorted(set(group['device']) - {''})) or '?'}") if minutes.gt(0).all() else "not recorded",
            "; ".join(sorted(set(group["data"]))),
        ])
    return markdown_table(["Curve", "Variant", "Parameters", "λ", "Steps per model (batch x patch)", "Training",
                           "Data"], rows)


def _standing(ok: pd.DataFrame, learned: list[tuple[str, str]]) -> str:
    """BD-rate (PSNR-RGB) of each learned curve against each classical curve, per dataset."""
    labels = curve_labels(ok)
    rows, references = [], []
    for dataset, data in ok.groupby("dataset", sort=True):
        curves = dict(list(data.groupby(["codec", "config"], sort=True)))
        classical = [key for key in curves if key not in learned]
        references = references or [labels[key] for key in classical]
        for key in (k for k in learned if k in curves):
            cells = []
            for reference in classical:
                # Mean curves over the images both have, as in bdrate.md.
                images = sorted(set(curves[key]["image"]) & set(curves[reference]["image"]))
                result = bd_rate(per_image_curves(curves[reference], images, "psnr_rgb").mean_curve(),
                                 per_image_curves(curves[key], images, "psnr_rgb").mean_curve())
                value = f"{result.value:+.1f} %" if math.isfinite(result.value) else "n/a"
                cells.append(value if result.reliable or value == "n/a" else f"({value})")
            rows.append([dataset, labels[key], *cells])
    if not rows:
        return ""
    return markdown_table(["Dataset", "Learned curve", *(f"vs {name}" for name in references)], rows)


def _most_steps(points: pd.DataFrame) -> int:
    """The longest training of the models trained here (0 when every one was imported)."""
    trained = points[points["imported"] == ""]
    return int(trained["steps"].max()) if len(trained) else 0


def demo_scale(models: tuple[dict[str, Any], ...]) -> bool:
    """Whether a model of the run was trained here for fewer steps than the paper's recipe."""
    if not models:
        return False
    points = pd.DataFrame(list(models))
    return bool((points["imported"] == "").any()) and _most_steps(points) < PAPER_STEPS


def learned_section(ok: pd.DataFrame, models: tuple[dict[str, Any], ...]) -> str:
    """The README's opening section on the run's learned models ("" when it has none)."""
    if not models:
        return ""
    points = pd.DataFrame(list(models))
    learned = sorted({tuple(curve.split(":", 1)) for curve in points["curve"]})  # (codec, config) pairs
    paper = PAPER_STEPS
    trained = points[points["imported"] == ""]
    most = _most_steps(points)
    if trained.empty:
        scale = ("Imported weights (`harness import-weights`): trained elsewhere, coded and measured here with "
                 "the harness's own pipeline.")
    elif most < paper:
        scale = (f"**Demo scale: these are not the paper's models.** Each trained for at most {most:,} steps; the "
                 f"paper trains every model for {paper:,} (1.5 M, then 50 k of subband reweighting) on CLIC, LIU4K "
                 "and COCO on GPUs. Their curves show the pipeline at work, not 3DM-WeConvene's published results "
                 "(those are in `anchors-bdrate.md`).")
    else:
        scale = f"Trained for {most:,} steps per model, the paper's recipe length ({paper:,})."
    standing = _standing(ok, learned)
    lines = [
        "## Learned models", "", scale, "", _models_table(points),
    ]
    if standing:
        lines += [
            "Where they stand: BD-rate on PSNR-RGB against each classical codec of this run (PCHIP over the mean "
            "curves; negative = fewer bits than that codec at equal quality; in parentheses when a reliability "
            "check failed, see `bdrate.md`).", "", standing,
        ]
    lines += [
        f"To train the real thing, on a GPU cluster: `ray up ray_cluster.yaml`, then `harness rerun --plan "
        f"{PAPER_PLAN} --address http://HEAD:8265` (the paper's data, λ and steps; the repository README, "
        "\"Clusters and scheduled reruns\").", "",
    ]
    return "\n".join(lines)
