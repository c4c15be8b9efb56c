"""Reading ``prepare-data`` shards for training and validation.

Training: an endless WebDataset pipeline: shards resampled with replacement,
a shuffle buffer across patches, PNG decoded to float32 tensors in [0, 1]
(3×H×W), a random crop to the training size. Validation: every val patch
once, in shard order, centre-cropped, so two evaluations see the same pixels.

Everything is seeded: the shard draw and the shuffle by ``(seed, DataLoader
worker, node)`` via WebDataset's worker seed, the crops by the same, so a
training run can be replayed.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from harness.data.manifest import ShardManifest, require_manifest
from harness.errors import HarnessError

SPLITS = ("train", "val")


def shard_paths(data_dir: str | Path, split: str, crop: int, manifest: ShardManifest | None = None) -> list[Path]:
    """The shards of ``split`` in ``data_dir``, after checking they can feed ``crop``×``crop`` samples
    (``manifest``: the folder's, when the caller has read it already)."""
    if split not in SPLITS:
        raise HarnessError(f"unknown split {split!r}: use train or val")
    data_dir = Path(data_dir)
    manifest = manifest or require_manifest(data_dir)
    if crop > manifest.patch:
        raise HarnessError(f"{data_dir} holds {manifest.patch}px patches, smaller than the {crop}px training crop")
    records = manifest.written(split)
    if not records:
        raise HarnessError(f"{data_dir} has no {split} samples (prepared with --val-fraction 0?)")
    paths = [data_dir / r.name for r in records]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise HarnessError(f"{data_dir} lacks {len(missing)} shard(s), e.g. {missing[0]}: rerun prepare-data")
    return paths


def decode_patch(png: bytes) -> torch.Tensor:
    """PNG bytes → float32 tensor 3×H×W in [0, 1]."""
    with Image.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)


def random_crop(image: torch.Tensor, size: int, rng: random.Random) -> torch.Tensor:
    height, width = image.shape[-2:]
    top, left = rng.randint(0, height - size), rng.randint(0, width - size)
    return image[..., top : top + size, left : left + size]


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def _worker_rng(seed: int, stage: str) -> random.Random:
    """The generator of one pipeline stage in this DataLoader worker and node. Seeded by a
    string, which ``random`` digests with SHA-512: the same in every process (WebDataset's
    ``make_seed`` mixes in ``hash()`` of its arguments, which for a str changes with
    PYTHONHASHSEED, i.e. from one process to the next)."""
    import webdataset as wds

    return random.Random(f"{wds.utils.pytorch_worker_seed()}/{seed}/{stage}")


def _shuffle(buffer: int, seed: int):
    import webdataset as wds

    def stage(samples: Iterable[dict]) -> Iterator[dict]:
        # The generator is made when iteration starts, i.e. inside each DataLoader worker.
        return wds.shuffle(buffer, initial=min(buffer, 100), rng=_worker_rng(seed, "shuffle"))(samples)

    return stage


def _train_samples(crop: int, seed: int):
    def stage(samples: Iterable[dict]) -> Iterator[torch.Tensor]:
        rng = _worker_rng(seed, "crop")
        for sample in samples:
            yield random_crop(decode_patch(sample["png"]), crop, rng)

    return stage


def _val_samples(crop: int):
    def stage(samples: Iterable[dict]) -> Iterator[torch.Tensor]:
        for sample in samples:
            yield center_crop(decode_patch(sample["png"]), crop)

    return stage


def train_dataset(data_dir: str | Path, crop: int, *, shuffle_buffer: int = 1000, seed: int = 0):
    """Endless stream of training crops (float32, 3×crop×crop, [0, 1])."""
    import webdataset as wds

    urls = [str(p) for p in shard_paths(data_dir, "train", crop)]
    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.tarfile_to_samples(),
        _shuffle(shuffle_buffer, seed),
        _train_samples(crop, seed),
    )


def val_dataset(data_dir: str | Path, crop: int):
    """Every validation patch once, centre-cropped to ``crop``, in a fixed order."""
    import webdataset as wds

    urls = [str(p) for p in shard_paths(data_dir, "val", crop)]
    return wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples(),
                            _val_samples(crop))


def train_loader(data_dir: str | Path, crop: int, batch_size: int, *, num_workers: int = 0,
                 shuffle_buffer: int = 1000, seed: int = 0) -> torch.utils.data.DataLoader:
    """Batches (B×3×crop×crop) of :func:`train_dataset`."""
    dataset = train_dataset(data_dir, crop, shuffle_buffer=shuffle_buffer, seed=seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)


def val_loader(data_dir: str | Path, crop: int, batch_size: int) -> torch.utils.data.DataLoader:
    """Batches of :func:`val_dataset` (the last one may be smaller)."""
    return torch.utils.data.DataLoader(val_dataset(data_dir, crop), batch_size=batch_size, num_workers=0)
