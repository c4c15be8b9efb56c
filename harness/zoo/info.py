"""``harness model-info``: parameter counts per module, next to the paper's Tables I-IV."""

from __future__ import annotations

import json

import torch

from harness.model.network import WeConvene
from harness.zoo.config import ModelInfoConfig
from harness.zoo.factory import build_model
from harness.zoo.registry import is_baseline
from harness.zoo.variants import get_config

# Millions of parameters reported for each variant (Tables I-IV, reference/published/).
PAPER_PARAMS_M = {
    "3dm-weconvene": 73.95,
    "weconv2d": 83.90,
    "hf3x3": 82.89,
    "levels1": 72.25,
    "wecharm2d": 97.19,
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(model: WeConvene) -> dict[str, int]:
    """Trainable parameters of g_a, g_s, h_a, h_s (both branches) and the entropy model (e_Slices + z prior)."""
    codec = model.latent_codec
    hyper_s = _count(codec.h_s_mean) + _count(codec.h_s_scale)
    return {
        "g_a": _count(model.g_a),
        "g_s": _count(model.g_s),
        "h_a": _count(codec.h_a),
        "h_s": hyper_s,
        "entropy_model": _count(codec) - _count(codec.h_a) - hyper_s,
    }


def module_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per top-level module (g_a, g_s, h_a, h_s, entropy models, context models)."""
    counts = {name: _count(child) for name, child in model.named_children()}
    return {name: count for name, count in counts.items() if count}


def describe(variant: str) -> dict:
    if is_baseline(variant):
        return _describe_baseline(variant)
    config = get_config(variant)
    modules = parameter_counts(WeConvene(config))
    return {
        "variant": variant,
        "params": sum(modules.values()),
        "modules": modules,
        "paper_params": None if variant not in PAPER_PARAMS_M else round(PAPER_PARAMS_M[variant] * 1e6),
        "stride": config.stride,
        "config": config.to_dict(),
    }


def _describe_baseline(variant: str) -> dict:
    """A CompressAI architecture: modules as CompressAI names them; no paper count (Tables I-IV
    list none of these widths), the zoo's own count is the reference (tests/test_model_baselines.py)."""
    model = build_model(variant)
    return {"variant": model.config.variant, "params": sum(p.numel() for p in model.parameters()),
            "modules": module_counts(model), "paper_params": None, "stride": model.stride,
            "config": model.config.to_dict()}


def run(config: ModelInfoConfig) -> dict:
    info = describe(config.variant)
    if config.as_json:
        print(json.dumps(info, indent=2))
        return info
    wavelet = f"wavelet {info['config']['wavelet']}, " if "wavelet" in info["config"] else ""
    print(f"variant {info['variant']}  ({wavelet}pads images to multiples of {info['stride']})")
    for name, count in info["modules"].items():
        print(f"  {name:<14}{count:>14,}")
    line = f"  {'total':<14}{info['params']:>14,}"
    if info["paper_params"]:
        line += f"   (paper: {info['paper_params'] / 1e6:.2f} M, {100 * (info['params'] / info['paper_params'] - 1):+.1f} %)"
    print(line)
    return info
