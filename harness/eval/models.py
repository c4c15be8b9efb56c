"""What a report says first about its learned models: how they were made, at what scale,
and where they stand against the classical codecs of the same run.

The facts come from the model cards (through ``run.json``'s ``models``, written by the
leaderboard) and the standing from the run's own results: BD-rate on PSNR-RGB of each
learned curve against each classical curve, mean curves over the dataset's images
(PCHIP, the report's method). A model trained for fewer steps than the paper's recipe
is called demo scale, so nobody reads a demo curve as 3DM-WeConvene's published result.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.eval.bdrate import bd_rate, per_image_curves
from harness.eval.tables import curve_labels, markdown_table

PAPER_PLAN = "schedule/paper.toml"


def _paper_steps() -> int:
    from harness.train.loop import PAPER_ITERATIONS, PAPER_STAGE2_STEPS

    return PAPER_ITERATIONS + PAPER_STAGE2_STEPS


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


def learned_section(ok: pd.DataFrame, models: tuple[dict[str, Any], ...]) -> str:
    """The README's opening section on the run's learned models ("" when it has none)."""
    if not models:
        return ""
    points = pd.DataFrame(list(models))
    # run.json files written before imported models were told apart hold trained models only
    points["imported"] = points["imported"].fillna("") if "imported" in points else ""
    learned = sorted({tuple(curve.split(":", 1)) for curve in points["curve"]})  # (codec, config) pairs
    paper = _paper_steps()
    trained = points[points["imported"] == ""]
    most = int(trained["steps"].max()) if len(trained) else 0
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
