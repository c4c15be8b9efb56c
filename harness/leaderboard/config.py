"""The leaderboard's configuration: which datasets, codecs and models, where the run folder
is, and how the cells run on Ray. Each default and each check lives here once; the CLI and
a rerun plan build it through :func:`harness.configs.build`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.artefacts.config import check_budget
from harness.atomic import same_file
from harness.codecs.config import DEFAULT_DIR
from harness.data.registry import FOLDER_PREFIX
from harness.errors import HarnessError
from harness.leaderboard.metrics import DEFAULT_METRICS, resolve_metrics
from harness.lock import check_wait
from harness.precisions import AUTO, check_precision
from harness.slug import slug


@dataclass(frozen=True)
class LeaderboardConfig:
    datasets: tuple[str, ...] = ("kodak",)
    profile: str = "quick"
    codecs: tuple[str, ...] = ()  # "id" or "id:config"; empty = every codec's profile config
    run_name: str | None = None  # folder under reports_dir; default "<datasets>-<profile>"
    reports_dir: Path = Path("reports")
    root: Path | None = None  # data root for registry datasets other than vendored Kodak
    codec_dir: Path = DEFAULT_DIR
    models: tuple[Path, ...] = ()  # train-sweep model folders: one learned curve each
    gpus_per_model: float = 0.0  # GPUs per learned-codec cell (0 on CPU-only clusters)
    max_memory: int | None = None  # bytes per learned cell; None: the variant's cell_budget
    precision: str = AUTO  # learned codecs' transforms: fp32, bf16, or auto (bf16 where it runs fast)
    max_images: int | None = None  # first N images of each dataset
    force: bool = False
    address: str | None = None  # Ray cluster to join; None starts a local instance
    num_cpus: int | None = None  # local instance only
    timeout_s: float | None = None  # per encode/decode call, overrides the codec files
    checkpoint_s: float = 30.0
    progress: bool = True
    metrics: tuple[str, ...] = DEFAULT_METRICS  # names of harness.leaderboard.metrics.METRICS, or "all"
    wait_s: float = 0.0  # wait this long for another command's lock on the run folder
    crops: int = 3  # reconstruction crops kept per image and curve for the web report (0: none)

    def __post_init__(self) -> None:
        check_wait(self.wait_s)
        if self.crops < 0:
            raise HarnessError(f"--crops must be 0 or more (crops kept per image and curve), got {self.crops}")
        if not self.datasets:
            raise HarnessError("give at least one --dataset")
        # "all" and the always-computed core pair resolve here, so the plan records what runs.
        object.__setattr__(self, "metrics", resolve_metrics(tuple(self.metrics)))
        if self.max_images is not None and self.max_images < 1:
            raise HarnessError(f"--max-images must be at least 1, got {self.max_images}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise HarnessError(f"--num-cpus must be at least 1, got {self.num_cpus}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise HarnessError(f"--timeout must be a positive number of seconds, got {self.timeout_s:g}")
        check_precision(self.precision)  # a bad name fails before Ray starts
        check_budget(self.max_memory)
        if self.gpus_per_model < 0 or self.checkpoint_s < 0:
            raise HarnessError("--gpus-per-model and checkpoint_s (seconds between table saves) must be >= 0")
        self._check_apart_from_inputs()

    @property
    def run_dir(self) -> Path:
        return self.reports_dir / (self.run_name or default_run_name(self))

    def _check_apart_from_inputs(self) -> None:
        """A run folder among its inputs would feed them its outputs: in a ``folder:`` dataset
        (read recursively) the report's PNG plots would join the test set and its README.md
        replace the folder's; as a --models folder, its run.json would be read as a model card."""
        run_dir = self.run_dir.resolve()
        for folder in (Path(s.removeprefix(FOLDER_PREFIX)).expanduser().resolve() for s in self.datasets
                       if s.startswith(FOLDER_PREFIX)):
            if run_dir.is_relative_to(folder):
                raise HarnessError(f"run folder {run_dir} lies in the dataset folder {folder}: the report's plots "
                                   "would join its images; choose another --reports or --run")
        for models in self.models:
            if same_file(run_dir, models):
                raise HarnessError(f"run folder {run_dir} is the --models folder {models}: its run.json would be "
                                   "read as a model card; choose another --reports or --run")


def default_run_name(config: LeaderboardConfig) -> str:
    return slug("+".join(config.datasets)) + f"-{config.profile}"
