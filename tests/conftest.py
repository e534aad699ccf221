"""Shared fixtures: tiny demo data made by the real ``smug data demo`` command, shrunken project YAMLs, DIRECT runs."""

import contextlib
import logging
import pathlib
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECTS_DIR = REPO_ROOT / "projects"
BIN_DIR = pathlib.Path(sys.executable).parent

# The demo-size projects (rss_estimate maps) run on a tiny 32 x 24, 4-coil matrix. The knee/brain projects estimate
# ESPIRiT maps (6 x 6 kernel) from the ACS of the 8x mask (centre fraction 0.04): DIRECT's calibration needs at least
# 6 ACS columns (W >= 150) and at least 36 * coils sliding blocks, (H - 5) * (ACS - 5) >= 36 * coils;
# 24 x 224 with 2 coils gives 9 ACS columns and 76 >= 72 blocks.
TINY_MATRIX, TINY_COILS = (32, 24), 4
ESPIRIT_MATRIX, ESPIRIT_COILS = (24, 224), 2
TINY_SLICES = 2
ITERATIONS = 6  # DIRECT validates and checkpoints only from iteration 5 on: model_5.pt, metrics_val_*_5.json
# The paper-size projects (knee, brain) keep their networks (DIDN 64 channels x 3 blocks) but unroll once with 2
# noise samples: 8 unrolls x 10 samples take minutes per iteration on one CPU thread.
PAPER_SHRINK = {"num_steps": 1, "num_samples": 2}


# `make test` runs the suite in two pytest-xdist workers: each file's tests stay in one worker (its module fixtures
# run once), the files sharing the session's pre-training runs (`project_runs`) share a worker, and the longest
# groups start first so that both workers finish together.
PROJECT_RUNS_FILES = ("test_projects", "test_direct_e2e", "test_models_portable_checkpoint")
SHARED_WORKER = {stem: "project_runs" for stem in PROJECT_RUNS_FILES}
LONGEST_FIRST = ("test_fastmri_shapes", "project_runs")


def worker_group(nodeid: str) -> str:
    """The group of a test that one xdist worker runs whole: its file, or the files that share session fixtures."""
    stem = pathlib.PurePosixPath(nodeid.split("::", 1)[0]).stem
    return SHARED_WORKER.get(stem, stem)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unused when it is not installed
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    # pytest-xdist's own `loadgroup` marks do not group under pytest 9.2 (it rewrites a node id pytest no longer
    # keeps), so the scheduler takes the groups from the node ids.
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {group: place for place, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(worker_group(item.nodeid), len(rank)))  # stable: the files' order otherwise


def multicoil_inputs(batch: int = 2, coils: int = 3, size: tuple[int, int] = (16, 12), seed: int = 1):
    """Tiny random column mask and normalised coil maps in DIRECT's layout, drawn in a fixed order.

    Returns
    -------
    tuple
        The generator (callers draw their k-space or image from it next, so values stay those of the seed), the
        mask ``(batch, 1, H, W, 1)`` and maps ``(batch, coils, H, W, 2)`` with sum_c |S_c|^2 = 1.
    """
    import torch

    h, w = size
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(batch, 1, 1, w, 1, generator=generator) > 0.5).float().expand(batch, 1, h, w, 1).contiguous()
    sens = torch.randn(batch, coils, h, w, 2, generator=generator)
    sens = sens / (sens**2).sum(dim=(1, 4), keepdim=True).sqrt()
    return generator, mask, sens


def smug_command(*args: str) -> list[str]:
    """The ``smug`` CLI of this interpreter's environment as an argument list."""
    return [sys.executable, "-m", "smug_plugin.cli.main", *args]


def direct_command(*args: str) -> list[str]:
    """The ``direct`` console script installed next to this interpreter."""
    return [str(BIN_DIR / "direct"), *args]


def run_command(command: list[str], cwd: pathlib.Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command, capture stdout and stderr together as text, never raise on a non-zero exit status."""
    return subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
    )


def make_demo_data(root: pathlib.Path, matrix: tuple[int, int], coils: int) -> pathlib.Path:
    """Run the real ``smug data demo`` command with one volume of ``TINY_SLICES`` slices per split; return ``root``."""
    sizes = ["--matrix", *map(str, matrix), "--coils", str(coils), "--slices-per-volume", str(TINY_SLICES)]
    volumes = ["--train-volumes", "1", "--val-volumes", "1", "--test-volumes", "1"]
    result = run_command(smug_command("data", "demo", "--output-dir", str(root), *sizes, *volumes), cwd=root)
    assert result.returncode == 0, result.stdout
    for split in ("train", "val", "test"):
        assert len(list((root / split).glob("*.h5"))) == 1, result.stdout
    return root


@pytest.fixture(scope="session")
def tiny_demo_data(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Tiny demo data (``TINY_MATRIX``, ``TINY_COILS``): the root holding ``train/``, ``val/`` and ``test/``."""
    return make_demo_data(tmp_path_factory.mktemp("tiny_demo"), TINY_MATRIX, TINY_COILS)


@pytest.fixture(scope="session")
def tiny_espirit_data(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The smallest demo data on which DIRECT's ESPIRiT calibration works for the 4x and 8x masks."""
    return make_demo_data(tmp_path_factory.mktemp("tiny_espirit"), ESPIRIT_MATRIX, ESPIRIT_COILS)


def shrink_project(
    source: pathlib.Path,
    destination: pathlib.Path,
    iterations: int = ITERATIONS,
    model_overrides: dict | None = None,
) -> pathlib.Path:
    """Write a copy of a project YAML that trains ``iterations`` steps (batch 1), then validates and checkpoints.

    Parameters
    ----------
    source : pathlib.Path
        A project YAML under ``projects/``.
    destination : pathlib.Path
        Where to write the copy; DIRECT names the run folder after its file name.
    iterations : int
        Training iterations (also the validation and checkpoint interval); DIRECT validates and checkpoints only
        from iteration 5 on, so 6 is the least that writes ``model_5.pt`` and ``metrics_val_*_5.json``.
    model_overrides : dict, optional
        Keys of the ``model:`` section to replace (e.g. ``denoiser_checkpoint``).

    Returns
    -------
    pathlib.Path
        ``destination``.
    """
    cfg = yaml.safe_load(source.read_text())
    training = cfg["training"]
    training.update(num_iterations=iterations, validation_steps=iterations, lr_warmup_iter=0, batch_size=1)
    training["checkpointer"]["checkpoint_steps"] = iterations
    cfg["validation"]["batch_size"] = 2
    cfg.get("inference", {})["batch_size"] = 2
    cfg["model"].update(model_overrides or {})
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return destination


@contextlib.contextmanager
def restored_logging_and_threads():
    """Undo what an in-process DIRECT run leaves behind: root-logger handlers (bound to pytest's captured stdout)
    and the torch thread count."""
    import torch

    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        torch.set_num_threads(threads)


def train_in_process(cfg: pathlib.Path, experiment_dir: pathlib.Path, data_root: pathlib.Path) -> pathlib.Path:
    """Train like ``direct train EXPERIMENT_DIR --cfg CFG --device cpu --num-workers 0``, in this process.

    Parameters
    ----------
    cfg : pathlib.Path
        The (shrunken) project YAML.
    experiment_dir : pathlib.Path
        The positional experiment directory of ``direct train``.
    data_root : pathlib.Path
        Root with ``train/`` and ``val/``.

    Returns
    -------
    pathlib.Path
        The run folder ``experiment_dir / cfg.stem`` holding checkpoints and validation metrics.
    """
    import direct.config.defaults  # noqa: F401  (breaks DIRECT's circular config import)
    from direct.train import setup_train
    from direct.utils import set_all_seeds

    with restored_logging_and_threads():
        # What `direct train` (train_from_argparse) does before launching on one device.
        import torch

        torch.set_num_threads(1)
        set_all_seeds(42)
        setup_train(
            run_name=cfg.stem,
            training_root=data_root / "train",
            validation_root=data_root / "val",
            base_directory=experiment_dir,
            cfg_filename=cfg,
            force_validation=False,
            initialization_checkpoint=None,
            initial_images=None,
            initial_kspace=None,
            noise=None,
            device="cpu",
            num_workers=0,
            resume=False,
            machine_rank=0,
            mixed_precision=False,
            debug=False,
        )
    return experiment_dir / cfg.stem


def project_name(project: pathlib.Path) -> str:
    """``projects/demo/smug.yaml`` -> ``demo/smug``, ``projects/smug_knee.yaml`` -> ``smug_knee``."""
    return project.relative_to(PROJECTS_DIR).with_suffix("").as_posix()


def pretraining_project(project: pathlib.Path) -> pathlib.Path:
    """The ``didn_pretrain`` project whose checkpoint a fine-tuning project of the same study starts from.

    Studies in a folder (``projects/demo/``) have ``didn_pretrain.yaml``; the paper-size studies at the top level
    have ``didn_pretrain_<anatomy>.yaml``.
    """
    if project.parent != PROJECTS_DIR:
        return project.parent / "didn_pretrain.yaml"
    return project.parent / f"didn_pretrain_{project.stem.rsplit('_', 1)[-1]}.yaml"


def uses_espirit(project: pathlib.Path) -> bool:
    """Whether any dataset of the project estimates ESPIRiT sensitivity maps."""
    cfg = yaml.safe_load(project.read_text())
    datasets = [*cfg["training"]["datasets"], *cfg["validation"]["datasets"]]
    return any(d["transforms"]["sensitivity_map_estimation"]["sensitivity_maps_type"] == "espirit" for d in datasets)


class ProjectRuns:
    """Trains shrunken project YAMLs on the tiny data once per distinct content, pre-training denoisers first.

    Parameters
    ----------
    data_root : pathlib.Path
        Root with ``train/`` and ``val/`` (the :func:`tiny_demo_data` folder).
    espirit_data_root : pathlib.Path
        The same for projects with ESPIRiT maps (the :func:`tiny_espirit_data` folder).
    work_dir : pathlib.Path
        Where the shrunken YAMLs and the run folders go.
    """

    def __init__(self, data_root: pathlib.Path, espirit_data_root: pathlib.Path, work_dir: pathlib.Path):
        self.data_root, self.espirit_data_root, self.work_dir = data_root, espirit_data_root, work_dir
        self._runs: dict[str, pathlib.Path] = {}

    def shrunken(self, project: pathlib.Path) -> pathlib.Path:
        """The shrunken copy of ``project``, its ``denoiser_checkpoint`` pointing at a pre-training run made here."""
        model = yaml.safe_load(project.read_text())["model"]
        overrides = {}
        if model.get("denoiser_checkpoint"):
            overrides["denoiser_checkpoint"] = str(self.checkpoint(self.train(pretraining_project(project))))
        if model.get("rs_e2e_teacher_checkpoint"):
            # RS-E2E as published learns from its study's MoDL: train that one (shrunken alike) first.
            teacher = project.with_name(project.name.replace("rs_e2e", "modl"))
            overrides["rs_e2e_teacher_checkpoint"] = str(self.checkpoint(self.train(teacher)))
        if project.parent == PROJECTS_DIR:
            overrides.update({k: v for k, v in PAPER_SHRINK.items() if k in model})
        name = project_name(project).replace("/", "_")
        return shrink_project(project, self.work_dir / "configs" / f"{name}.yaml", model_overrides=overrides)

    @staticmethod
    def content_key(project: pathlib.Path) -> str:
        """The YAML without comments, the checkpoints :meth:`shrunken` replaces anyway and the loss multipliers
        (a lambda_l frontier point trains like any other: one of them is trained, the others are loaded)."""
        cfg = yaml.safe_load(project.read_text())
        cfg["model"].pop("denoiser_checkpoint", None)
        cfg["model"].pop("rs_e2e_teacher_checkpoint", None)
        for loss in cfg["training"]["loss"]["losses"]:
            loss.pop("multiplier", None)
        return yaml.safe_dump(cfg, sort_keys=True)

    def twin(self, project: pathlib.Path) -> pathlib.Path | None:
        """The run folder of an already trained project with the same content, if any."""
        return self._runs.get(self.content_key(project))

    def train(self, project: pathlib.Path, subprocess_cli: bool = False) -> pathlib.Path:
        """Train ``project`` (shrunken) unless a project with the same content was trained; return its run folder.

        Parameters
        ----------
        project : pathlib.Path
            A project YAML under ``projects/``.
        subprocess_cli : bool
            Run the real ``direct train`` command instead of DIRECT's ``setup_train`` in this process.
        """
        key = self.content_key(project)
        if key not in self._runs:
            cfg = self.shrunken(project)
            experiment_dir = self.work_dir / "runs" / cfg.stem
            data_root = self.espirit_data_root if uses_espirit(project) else self.data_root
            if subprocess_cli:
                result = run_command(
                    direct_command(
                        "train",
                        str(experiment_dir),
                        "--cfg",
                        str(cfg),
                        "--training-root",
                        str(data_root / "train"),
                        "--validation-root",
                        str(data_root / "val"),
                        "--device",
                        "cpu",
                        "--num-workers",
                        "0",
                    ),
                    cwd=self.work_dir,
                )
                assert result.returncode == 0, result.stdout[-5000:]
                run = experiment_dir / cfg.stem
            else:
                run = train_in_process(cfg, experiment_dir, data_root)
            self._runs[key] = run
        return self._runs[key]

    @staticmethod
    def checkpoint(run: pathlib.Path, iterations: int = ITERATIONS) -> pathlib.Path:
        """The last checkpoint a shrunken run writes."""
        return run / f"model_{iterations - 1}.pt"


@pytest.fixture(scope="session")
def project_runs(
    tiny_demo_data: pathlib.Path, tiny_espirit_data: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> ProjectRuns:
    """One :class:`ProjectRuns` for the session, so that pre-training runs are shared between test files."""
    return ProjectRuns(tiny_demo_data, tiny_espirit_data, tmp_path_factory.mktemp("project_runs"))
