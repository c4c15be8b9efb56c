"""BD-rate against the reference implementation (``bjontegaard`` package) and
on bad curves: flags, never exceptions."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest

from harness.pixels.msssim import ms_ssim_db
from harness.report.bdrate import (
    FEW_POINTS,
    INVALID_VALUES,
    LOW_OVERLAP,
    NO_OVERLAP,
    NON_MONOTONIC,
    PerImageCurves,
    RDCurve,
    _bd,
    _bootstrap_pchip,
    bd_quality,
    bd_rate,
    bootstrap_ci,
)

VTM = RDCurve.of(
    [0.0482, 0.1125, 0.2458, 0.4905, 0.8748, 1.4308],
    [26.14, 28.49, 31.20, 34.26, 37.42, 40.42],
)


def _kodak_curves(shared_dir):
    curves = {}
    for path in sorted((shared_dir / "data" / "reference" / "compressai" / "kodak").glob("*.json")):
        results = json.loads(path.read_text())["results"]
        curves[(path.stem, "psnr")] = (results["bpp"], results["psnr-rgb"])
        if "ms-ssim-rgb" in results:
            curves[(path.stem, "msssim")] = (results["bpp"], ms_ssim_db(results["ms-ssim-rgb"]))
    return curves


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_matches_bjontegaard_package_on_every_compressai_kodak_pair(shared_dir, method):
    bjontegaard = pytest.importorskip("bjontegaard")
    curves = _kodak_curves(shared_dir)
    compared = 0
    for (a, metric_a), (t, metric_t) in itertools.permutations(curves, 2):
        if metric_a != metric_t:
            continue
        anchor, test = curves[(a, metric_a)], curves[(t, metric_t)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the package warns on small overlaps
            expected = bjontegaard.bd_rate(*anchor, *test, method=method, require_matching_points=False)
            expected_db = bjontegaard.bd_psnr(*anchor, *test, method=method, require_matching_points=False)
        rate = bd_rate(RDCurve.of(*anchor), RDCurve.of(*test), method)
        quality = bd_quality(RDCurve.of(*anchor), RDCurve.of(*test), method)
        assert math.isfinite(expected) == math.isfinite(rate.value), (a, t, metric_a)
        if math.isfinite(expected):
            assert abs(rate.value - expected) < 0.05, (a, t, metric_a, rate.value, expected)
            assert abs(quality.value - expected_db) < 0.005, (a, t, metric_a)
            compared += 1
    assert compared > 200


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_self_is_zero_and_rate_scaling_is_exact(method):
    assert bd_rate(VTM, VTM, method).value == pytest.approx(0.0, abs=1e-9)
    assert bd_quality(VTM, VTM, method).value == pytest.approx(0.0, abs=1e-9)
    cheaper = RDCurve.of(VTM.rate * 0.9, VTM.quality)
    result = bd_rate(VTM, cheaper, method)
    assert result.value == pytest.approx(-10.0, abs=1e-6)
    assert result.reliable and result.overlap == pytest.approx(1.0)
    assert bd_rate(cheaper, VTM, method).value == pytest.approx(100 / 0.9 - 100, abs=1e-6)


def test_points_in_any_order_give_the_same_value():
    shuffled = RDCurve.of(VTM.rate[::-1] * 0.8, VTM.quality[::-1])
    assert bd_rate(VTM, shuffled).value == pytest.approx(-20.0, abs=1e-6)


@pytest.mark.parametrize(
    "test_curve, flag",
    [
        (RDCurve.of([0.1, 0.2, 0.4], [28.0, 31.0, 34.0]), "test:" + FEW_POINTS),
        (RDCurve.of([0.1, 0.2, np.nan, 0.8], [28.0, 31.0, 34.0, 37.0]), "test:" + INVALID_VALUES),
        (RDCurve.of([0.1, 0.2, 0.4, 0.8], [28.0, np.inf, 34.0, 37.0]), "test:" + INVALID_VALUES),
        (RDCurve.of([0.0, 0.2, 0.4, 0.8], [28.0, 31.0, 34.0, 37.0]), "test:" + INVALID_VALUES),
        (RDCurve.of([0.1, 0.2, 0.4, 0.8], [28.0, 33.0, 32.0, 37.0]), "test:" + NON_MONOTONIC),
        (RDCurve.of([0.1, 0.2, 0.2, 0.8], [28.0, 31.0, 34.0, 37.0]), "test:" + NON_MONOTONIC),
        (RDCurve.of([2.0, 3.0, 4.0, 5.0], [50.0, 52.0, 54.0, 56.0]), NO_OVERLAP),
        (RDCurve.of([0.1, 0.2], [28.0, 31.0]), "test:" + FEW_POINTS),
        (RDCurve.of([], []), "test:" + FEW_POINTS),
        (RDCurve.of([0.1, 0.2, 0.3], [28.0, 31.0, 34.0, 37.0]), "test:" + INVALID_VALUES),
    ],
    ids=["3-points", "nan", "inf", "zero-rate", "non-monotonic", "duplicate-rate", "no-overlap", "2-points", "empty", "ragged"],
)
@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bad_curves_are_flagged_not_raised(test_curve, flag, method):
    for result in (bd_rate(VTM, test_curve, method), bd_quality(VTM, test_curve, method)):
        assert flag in result.flags
        assert not result.reliable
        assert math.isnan(result.value)
    swapped = bd_rate(test_curve, VTM, method)
    assert flag.replace("test:", "anchor:") in swapped.flags and math.isnan(swapped.value)


def test_small_overlap_keeps_the_value_but_is_unreliable():
    high = RDCurve.of([0.8, 1.4, 2.4, 3.6], [37.0, 40.4, 43.5, 46.6])
    result = bd_rate(VTM, high)
    assert result.flags == (LOW_OVERLAP,)
    assert math.isfinite(result.value) and not result.reliable
    assert 0 < result.overlap < 0.75


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="pchip, cubic"):
        bd_rate(VTM, VTM, "linear")


def _images(seed: int, n_images: int, scale: float) -> PerImageCurves:
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.6, 1.6, size=(n_images, 1))
    rate = np.array([0.1, 0.2, 0.4, 0.8, 1.6]) * difficulty * scale * rng.uniform(0.95, 1.05, size=(n_images, 5))
    quality = 27.0 + 4.5 * np.log2(np.array([1, 2, 4, 8, 16.0])) + rng.normal(0, 0.3, size=(n_images, 5))
    return PerImageCurves(rate, quality)


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    anchor, test = _images(1, 12, 1.0), _images(2, 12, 0.85)
    point = bd_rate(anchor.mean_curve(), test.mean_curve()).value
    ci = bootstrap_ci(anchor, test, resamples=1000, seed=7)
    assert ci.low < point < ci.high and ci.valid == 1000 and ci.stable
    assert bootstrap_ci(anchor, test, resamples=1000, seed=7) == ci
    same = bootstrap_ci(anchor, anchor, resamples=200)
    assert (same.low, same.high, same.valid) == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9), 200)


def test_bootstrap_tolerates_missing_images_and_bad_replicates():
    anchor, test = _images(1, 8, 1.0), _images(2, 8, 0.9)
    test.rate[3, 2] = np.nan  # one failed encode: that point averages over the others
    ci = bootstrap_ci(anchor, test, resamples=300)
    assert math.isfinite(ci.low) and ci.valid == 300
    broken = PerImageCurves(np.full((8, 5), np.nan), test.quality)
    assert math.isnan(bootstrap_ci(anchor, broken, resamples=50).low)


def test_an_infinite_quality_flags_the_mean_curve_instead_of_shifting_it():
    anchor, test = _images(1, 8, 1.0), _images(2, 8, 0.9)
    test.quality[3, :] = np.inf  # a losslessly coded image: its rates are finite, its PSNRs are not
    result = bd_rate(anchor.mean_curve(), test.mean_curve())
    assert math.isnan(result.value) and result.flags == ("test:" + INVALID_VALUES,)


def test_vectorised_bootstrap_path_equals_the_scalar_computation():
    rng = np.random.default_rng(3)
    shape = (300, 6)
    curves = [np.sort(rng.uniform(lo, hi, shape), axis=1) for lo, hi in ((0.1, 2), (25, 40), (0.1, 2), (25, 40))]
    curves[2][5, 2] = np.nan
    curves[3][9, 1] = curves[3][9, 2]
    for kind in ("rate", "quality"):
        fast = _bootstrap_pchip(*curves, kind)
        slow = np.array(
            [_bd(RDCurve.of(curves[0][b], curves[1][b]), RDCurve.of(curves[2][b], curves[3][b]), kind, "pchip", 0.0).value for b in range(shape[0])]
        )
        np.testing.assert_allclose(fast, slow, atol=1e-9, equal_nan=True)
