"""CompressAI baselines (`compressai:<name>` variants): widths, zoo state dicts, real bitstreams."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import compressai.models
import torch
from compressai.models import Elic2022Official
from compressai.zoo import image_models
from compressai.zoo.image import cfgs

from harness.artefacts.bitstream import unpack
from harness.artefacts.card import read_card
from harness.artefacts.checkpoint import load_checkpoint
from harness.artefacts.coding import decode, run_compress, run_decompress, to_tensor
from harness.artefacts.config import CompressConfig, DecompressConfig
from harness.artefacts.config import QUALITY_LAMBDAS, ImportWeightsConfig
from harness.artefacts.weights import run_import
from harness.cli import main
from harness.codecs.learned import Learned, instance, sweep_configs
from harness.errors import HarnessError
from harness.model.loss import LossConfig, RateDistortionLoss
from harness.pixels.images import load_rgb, save_png
from harness.report.anchors import load_published_curves
from harness.zoo.factory import build_model
from harness.zoo.registry import ARCHITECTURES, ZOO_WIDTHS, parse_variant

# Small widths of each architecture (ELIC's fifth channel group is M - 128).
SMALL = {
    "bmshj2018-factorized": {"N": 16, "M": 24},
    "bmshj2018-hyperprior": {"N": 16, "M": 24},
    "mbt2018-mean": {"N": 16, "M": 24},
    "mbt2018": {"N": 16, "M": 24},
    "cheng2020-anchor": {"N": 16},
    "cheng2020-attn": {"N": 16},
    "elic2022": {"N": 16, "M": 144},
}
COMPRESSAI_CLASSES = {name: getattr(compressai.models, arch.class_name) for name, arch in ARCHITECTURES.items()}


@pytest.fixture(scope="module")
def crop(tmp_path_factory, kodak_dir: Path) -> Path:
    """A Kodak crop whose sides are not multiples of 64 (the models pad and crop back)."""
    path = tmp_path_factory.mktemp("img") / "kodim23-crop.png"
    save_png(np.ascontiguousarray(load_rgb(kodak_dir / "kodim23.png").pixels[200:296, 300:420]), path)
    return path


def _official_file(name: str, folder: Path, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A fresh model of CompressAI's own class, its state dict saved as the zoo files are (torch.save)."""
    torch.manual_seed(seed)
    model = COMPRESSAI_CLASSES[name](**SMALL[name])
    path = folder / f"{name}-{seed}.pth.tar"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.mark.parametrize("variant, canonical, widths", [
    ("compressai:mbt2018-mean", "compressai:mbt2018-mean", {"N": 192, "M": 320}),
    ("compressai:mbt2018-mean?N=64,M=96", "compressai:mbt2018-mean?N=64,M=96", {"N": 64, "M": 96}),
    ("compressai:mbt2018-mean?M=96", "compressai:mbt2018-mean?N=192,M=96", {"N": 192, "M": 96}),
    ("compressai:bmshj2018-hyperprior?N=192,M=320", "compressai:bmshj2018-hyperprior", {"N": 192, "M": 320}),
    ("compressai:cheng2020-attn?N=64", "compressai:cheng2020-attn?N=64", {"N": 64}),
    ("compressai:elic2022", "compressai:elic2022", {"N": 192, "M": 320}),
])
def test_variant_syntax_and_canonical_names(variant, canonical, widths):
    config = parse_variant(variant)
    assert config.variant == canonical and config.widths == widths


@pytest.mark.parametrize("variant, message", [
    ("compressai:mbt2019", "unknown CompressAI architecture 'mbt2019'"),
    ("compressai:mbt2018-mean?K=3", "option 'K=3' of 'compressai:mbt2018-mean?K=3' is unknown"),
    ("compressai:cheng2020-anchor?M=64", "is unknown: compressai:cheng2020-anchor takes N=INT"),
    ("compressai:mbt2018?N=x", "N must be a whole number"),
    ("compressai:mbt2018?N=8,N=9", "is repeated"),
    ("compressai:mbt2018?N", "is not KEY=VALUE"),
    ("compressai:mbt2018?N=0", "N=0 is not a whole number in 1..1024"),
    ("compressai:mbt2018?", "empty option list"),
    ("compressai:elic2022?M=128", "needs M > 128"),
])
def test_bad_variants_are_one_line_errors(variant, message, capsys):
    with pytest.raises(HarnessError, match=message.replace("?", r"\?")) as error:
        build_model(variant)
    assert "\n" not in str(error.value)
    assert main(["model-info", "--variant", variant]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


@pytest.mark.parametrize("name", [pytest.param("cheng2020-anchor", marks=pytest.mark.slow), "mbt2018-mean"])
def test_model_info_counts_equal_the_zoo_model_at_quality_6(name, capsys):
    assert main(["model-info", "--variant", f"compressai:{name}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    zoo = image_models[name](quality=6)
    assert info["params"] == sum(p.numel() for p in zoo.parameters())
    assert info["variant"] == f"compressai:{name}" and sum(info["modules"].values()) == info["params"]


def test_the_registry_holds_compressais_zoo_widths_and_classes():
    """The registry names CompressAI's classes and copies its zoo's widths (to read names without torch)."""
    assert ZOO_WIDTHS == {name: cfgs[name] for name in ZOO_WIDTHS}
    assert all(isinstance(getattr(compressai.models, arch.class_name), type) for arch in ARCHITECTURES.values())


@pytest.mark.slow
def test_every_architecture_is_compressais_own_network():
    """Same state-dict keys and shapes as CompressAI's model (zoo quality 6; ELIC: its defaults)."""
    for name in ARCHITECTURES:
        ours = build_model(f"compressai:{name}").state_dict()
        theirs = (image_models[name](quality=6) if name in image_models else Elic2022Official()).state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}, name


# The others take seconds each on 2 shared cores: slow tier (one per stream layout stays fast).
FAST = ("bmshj2018-factorized", "mbt2018-mean")


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in ARCHITECTURES])
def test_official_state_dict_imports_and_round_trips_a_kodak_image(name, crop, tmp_path):
    source, official = _official_file(name, tmp_path)
    card = run_import(ImportWeightsConfig(f"compressai:{name}", quality=3, source=str(source), out=tmp_path / "pub"))
    assert card.lmbda == QUALITY_LAMBDAS["mse"][3] and card.metric == "mse" and card.entropy_path == "float"
    assert card.variant == parse_variant(f"compressai:{name}?" + ",".join(f"{k}={v}" for k, v in SMALL[name].items())).variant
    checkpoint = card.checkpoint_path(tmp_path / "pub" / f"{card.name}.json")
    model = load_checkpoint(checkpoint)
    assert card.params == sum(p.numel() for p in official.parameters())

    bitstream, decoded = tmp_path / "c.3dmw", tmp_path / "d.png"
    # fp32: CompressAI's own float32 run is the reference
    run_compress(CompressConfig(crop, checkpoint, bitstream, precision="fp32"))
    run_decompress(DecompressConfig(bitstream, checkpoint, decoded, precision="fp32"))
    pixels = load_rgb(crop).pixels
    out = load_rgb(decoded).pixels
    assert out.shape == pixels.shape

    # The container's streams are CompressAI's own strings for the (edge-padded) image, and the
    # decoded image is CompressAI's own decode of them, cropped back.
    official.update(force=True)
    official.eval()
    padded = model.pad(to_tensor(pixels))
    with torch.no_grad():
        reference = official.compress(padded)
        expected = official.decompress(reference["strings"], reference["shape"])["x_hat"]
    container = unpack(bitstream.read_bytes())
    assert container.streams == tuple(s[0] for s in reference["strings"])
    expected = (expected[0, :, : pixels.shape[0], : pixels.shape[1]] * 255).round().clamp(0, 255)
    assert np.array_equal(out, expected.to(torch.uint8).permute(1, 2, 0).numpy())
    assert float(np.mean((out.astype(float) - pixels) ** 2)) > 0  # an untrained model: lossy, not a copy

    # bf16 transforms run inside CompressAI's own compress/decompress, and the file still decodes
    run_compress(CompressConfig(crop, checkpoint, bitstream, precision="bf16"))
    run_decompress(DecompressConfig(bitstream, checkpoint, decoded, precision="bf16"))
    assert np.abs(load_rgb(decoded).pixels.astype(int) - out).mean() < 2


def test_latent_check_catches_a_decoder_whose_entropy_model_differs(crop):
    """The container's latent check is the CRC of the coded symbols: a decoder whose hyper decoder
    computes other scales (as another machine's float kernels may) decodes other symbols, and is refused."""
    from harness.artefacts.checkpoint import fingerprint
    from harness.artefacts.coding import encode

    torch.manual_seed(0)
    model = build_model("compressai:mbt2018-mean?N=16,M=24").eval()
    model.update(force=True)
    pixels = load_rgb(crop).pixels
    data = encode(model, pixels)
    assert decode(model, data).shape == pixels.shape
    # A copy records its own symbols (its hooks are its own), so it decodes the same file.
    assert np.array_equal(decode(copy.deepcopy(model), data, digest=fingerprint(model)), decode(model, data))
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.h_s[-1].bias += 2.0  # every scale (and mean) moves: other CDFs, other symbols
    other.update(force=True)
    with pytest.raises(HarnessError, match="decoded latent differs from the encoder's"):
        decode(other, data, digest=fingerprint(model))


def test_old_zoo_key_names_are_converted(tmp_path):
    """Older zoo files name the entropy bottleneck's tensors `_biases.0`, ...: CompressAI's own renaming applies."""
    source, official = _official_file("bmshj2018-hyperprior", tmp_path)
    state = torch.load(source, weights_only=True)
    renamed = {}
    for key, value in state.items():
        for kind in ("biases", "matrices", "factors"):
            key = key.replace(f"entropy_bottleneck.{kind}.", f"entropy_bottleneck._{kind}.")
        renamed[key] = value
    assert renamed.keys() != state.keys()
    torch.save(renamed, source)
    card = run_import(ImportWeightsConfig("compressai:bmshj2018-hyperprior", 1, str(source), tmp_path / "pub"))
    model = load_checkpoint(tmp_path / "pub" / card.checkpoint)
    assert torch.equal(model.entropy_bottleneck.biases[0], official.entropy_bottleneck.biases[0])


def test_wrong_files_and_architectures_are_one_line_errors(tmp_path, capsys):
    mean_file, _ = _official_file("mbt2018-mean", tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(mean_file.read_bytes()[:5000])
    out = tmp_path / "out"
    cases = [
        ("compressai:mbt2018", mean_file, "does not hold compressai:mbt2018 weights: 9 tensor(s) missing"),
        ("compressai:bmshj2018-hyperprior", mean_file, "does not hold compressai:bmshj2018-hyperprior weights"),
        ("compressai:cheng2020-anchor", mean_file, "no tensor g_a.0.conv1.weight"),
        ("compressai:mbt2018-mean", junk, "is not a PyTorch state dict"),
        ("compressai:mbt2018-mean", empty, "is not a state dict"),
        ("compressai:mbt2018-mean", truncated, "is not a PyTorch state dict"),
        ("compressai:mbt2018-mean", tmp_path / "missing.pth", "does not exist"),
    ]
    for variant, source, message in cases:
        assert main(["import-weights", variant, "--quality", "2", "--from", str(source), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (variant, source, err)
    assert not out.exists()  # nothing written by a failed import
    for args, message in ((["compressai:cheng2020-anchor", "--quality", "7"], "has qualities 1-6, got 7"),
                          (["compressai:mbt2018-mean?N=8,M=8", "--quality", "1"], "the widths come from the file"),
                          (["compressai:mbt2018-mean", "--quality", "1", "--metric", "psnr"], "unknown metric")):
        assert main(["import-weights", *args, "--from", str(mean_file), "--out", str(out)]) == 1
        assert message in capsys.readouterr().err


def test_imported_qualities_are_one_leaderboard_curve(crop, tmp_path):
    """Zoo qualities of two widths (as 1-4 vs 5-8 of mbt2018-mean) in one folder: one curve, λ from the table."""
    folder = tmp_path / "mbt2018-mean-zoo"
    for quality, widths in ((2, {"N": 8, "M": 16}), (6, {"N": 16, "M": 24})):
        path = tmp_path / f"q{quality}.pth.tar"
        torch.manual_seed(quality)
        torch.save(COMPRESSAI_CLASSES["mbt2018-mean"](**widths).state_dict(), path)
        assert main(["import-weights", "compressai:mbt2018-mean", "--quality", str(quality), "--from", str(path),
                     "--out", str(folder), "--metric", "ms-ssim"]) == 0
    [config] = sweep_configs(folder, "fp32")
    assert (config.codec, config.config) == ("compressai-mbt2018-mean", "mbt2018-mean-zoo")
    assert config.ladder == (4.58, 60.5)
    largest = max(read_card(p).params for p in folder.glob("*.json"))
    assert config.curve.params == largest
    codec = instance(config)
    pixels = load_rgb(crop).pixels
    for quality in config.ladder:
        data = codec.encode(pixels, quality, tmp_path)
        assert codec.decode(data, *pixels.shape[:2], tmp_path).shape == pixels.shape
    assert Learned.serves("compressai-mbt2018-mean") and not Learned.serves("compressai-mbt2019")


def test_import_from_the_zoo_reads_torch_hubs_cache(tmp_path, monkeypatch, capsys):
    """`--from zoo` goes through compressai's zoo URL and torch hub's cache: a file already in the
    cache is used without a download (so this test needs no network)."""
    from compressai.zoo.image import model_urls

    url = model_urls["bmshj2018-hyperprior"]["ms-ssim"][3]
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    source, official = _official_file("bmshj2018-hyperprior", tmp_path)
    source.rename(cache / url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["import-weights", "compressai:bmshj2018-hyperprior", "--quality", "3", "--from", "zoo",
                 "--metric", "ms-ssim", "--out", str(tmp_path / "out")]) == 0
    card = read_card(tmp_path / "out" / "ms-ssim-8.73.json")
    assert card.published.file == url and card.variant == "compressai:bmshj2018-hyperprior?N=16,M=24"
    assert main(["import-weights", "compressai:elic2022", "--quality", "3", "--from", "zoo",
                 "--out", str(tmp_path / "elic")]) == 1
    assert "CompressAI's zoo has no mse weights of elic2022" in capsys.readouterr().err


def test_published_compressai_curves_name_their_codec():
    """fidelity.md pairs an imported curve with CompressAI's published curve of the same model."""
    codecs = {c.codec for c in load_published_curves() if c.dataset == "kodak"}
    assert {"compressai-bmshj2018-hyperprior", "compressai-mbt2018", "compressai-cheng2020-anchor"} <= codecs
    assert all(Learned.serves(c) for c in codecs if c and c.startswith("compressai-"))


def test_stage_2_of_a_baseline_is_eq_1_and_rates_share_one_vocabulary(crop):
    x = to_tensor(load_rgb(crop).pixels)[..., :64, :64]
    for name in ("bmshj2018-factorized", "mbt2018-mean"):
        torch.manual_seed(0)
        model = build_model(f"compressai:{name}?N=16,M=24").train()
        with torch.no_grad():  # the losses' values only
            output = model(x)
        stage1 = RateDistortionLoss(LossConfig(0.01, stage=1))(output, x)
        stage2 = RateDistortionLoss(LossConfig(0.01, stage=2, w1=3.0, w2=0.1))(output, x)
        assert float(stage2["loss"]) == pytest.approx(float(stage1["loss"]))
        assert {k for k in stage1 if k.startswith("bpp")} == {"bpp", "bpp_y", "bpp_z"}
        assert float(stage1["bpp"]) == pytest.approx(float(stage1["bpp_y"] + stage1["bpp_z"]))
    assert float(stage1["bpp_z"]) > 0
    factorized = RateDistortionLoss()(build_model("compressai:bmshj2018-factorized?N=16,M=24")(x), x)
    assert float(factorized["bpp_z"]) == 0


@pytest.mark.slow
def test_baseline_and_3dm_sweeps_share_the_recipe_and_rank_side_by_side(photo_shards, ray_local, kodak_dir, tmp_path):
    """train-sweep of compressai:mbt2018-mean (small widths) and of tiny 3DM-WeConvene on the same shards
    with the same recipe; the leaderboard ranks both curves beside JPEG."""
    import pandas as pd

    from harness.data.recipe import PatchRecipe
    from harness.leaderboard.config import LeaderboardConfig
    from harness.leaderboard.run import run as leaderboard
    from harness.report.config import ReportConfig
    from harness.report.publish import publish, record_models
    from harness.train.config import sweep_config
    from harness.train.sweep import run as sweep

    shards = photo_shards(6, PatchRecipe(patch=64, resize=128, patches_per_image=2), val_fraction=0.34)
    recipe = dict(data=shards, lambdas=(0.0067, 0.05), stage1_steps=12, stage2_steps=6, batch_size=2, patch=64,
                  lr=1e-3, milestones=(), w1=2.0, w2=0.5, log_every=6, checkpoint_every=6, val_batches=1)
    baseline = sweep(sweep_config(dict(variant="compressai:mbt2018-mean?N=16,M=24", out=tmp_path / "mbt", **recipe)))
    tiny = sweep(sweep_config(dict(variant="tiny", out=tmp_path / "tiny", **recipe)))
    for card in baseline:
        assert card.variant == "compressai:mbt2018-mean?N=16,M=24"
        assert card.stages["2"].loss == "eq. 1" and "plain fine-tune" in card.stages["2"].note
        assert card.stages["2"].w1 is None and card.stages["2"].steps == 6
    assert all(card.stages["2"].loss == "eq. 2" and card.stages["2"].w1 == 2.0 for card in tiny)
    assert {c.data_sha256 for c in baseline} == {c.data_sha256 for c in tiny}

    rows = pd.read_parquet(tmp_path / "mbt" / "metrics.parquet")
    assert {c for c in rows.columns if c.startswith("bpp")} == {"bpp", "bpp_y", "bpp_z"}
    assert "bpp_LLL" in pd.read_parquet(tmp_path / "tiny" / "metrics.parquet").columns
    for _, row in rows[rows["stage"] == 2].iterrows():  # w1, w2 given, yet stage 2 optimises eq. 1
        assert row["loss"] == pytest.approx(row["bpp"] + row["lmbda"] * row["distortion"], rel=1e-4)

    images = tmp_path / "images"
    images.mkdir()
    for name in ("kodim05.png", "kodim23.png"):
        save_png(np.ascontiguousarray(load_rgb(kodak_dir / name).pixels[:96, :128]), images / name)
    config = LeaderboardConfig(datasets=(f"folder:{images}",), codecs=("jpeg:quick",),
                               models=(tmp_path / "mbt" / "models", tmp_path / "tiny" / "models"), run_name="t",
                               reports_dir=tmp_path, progress=False, checkpoint_s=0.0)
    leaderboard(config)
    record_models(config.run_dir, config.models)
    publish(ReportConfig(config.run_dir, anchor="jpeg"))
    run_dir = tmp_path / "t"
    frame = pd.read_parquet(run_dir / "results.parquet")
    learned = frame[frame["codec"].isin(["compressai-mbt2018-mean", "tiny"])]
    assert len(learned) == 8 and (learned["status"] == "ok").all()
    assert set(learned.loc[learned["codec"] == "compressai-mbt2018-mean", "params"]) == {baseline[0].params}
    for report in ("bdrate.md", "params.md", "timing.md"):
        text = (run_dir / report).read_text()
        assert "compressai-mbt2018-mean" in text and "tiny" in text, report
    assert list(run_dir.glob("rd-*-psnr.png"))


def test_init_model_checkpoint_of_a_baseline_and_its_errors(tmp_path, capsys):
    path = tmp_path / "mbt.pt"
    assert main(["init-model", "--variant", "compressai:mbt2018-mean?M=24,N=16", "--out", str(path)]) == 0
    assert "variant compressai:mbt2018-mean?N=16,M=24" in capsys.readouterr().out  # canonical spelling
    model = load_checkpoint(path, variant="compressai:mbt2018-mean?N=16,M=24")
    assert model.config == parse_variant("compressai:mbt2018-mean?N=16,M=24")
    with pytest.raises(HarnessError, match="holds variant 'compressai:mbt2018-mean\\?N=16,M=24', expected 'tiny'"):
        load_checkpoint(path, variant="tiny")
    payload = torch.load(path, weights_only=True)
    for config, message in (({**payload["config"], "M": 32}, "but its widths make 'compressai:mbt2018-mean\\?N=16,M=32'"),
                            ({**payload["config"], "variant": "compressai:mbt2018?N=16,M=24", "architecture": "mbt2018"},
                             "does not hold compressai:mbt2018\\?N=16,M=24 weights: 9 tensor\\(s\\) missing"),
                            ({**payload["config"], "K": 3}, "invalid CompressAI model config")):
        torch.save({**payload, "config": config}, tmp_path / "bad.pt")
        with pytest.raises(HarnessError, match=message) as error:
            load_checkpoint(tmp_path / "bad.pt")
        assert "\n" not in str(error.value)
