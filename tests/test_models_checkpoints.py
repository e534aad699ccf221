"""Pre-trained denoiser checkpoints: read safely (weights only), with one-line errors, and only when training starts."""

import os
import pathlib

import direct
import pytest
import torch
from direct.config.defaults import DefaultConfig, FunctionConfig, LossConfig, TrainingConfig, ValidationConfig
from direct.data.lr_scheduler import WarmupMultiStepLR
from direct.data.transforms import fft2, ifft2
from direct.nn.mri_models import MRIModelEngine
from omegaconf import OmegaConf

from smug_plugin.models.config import SMUGConfig
from smug_plugin.models.denoiser import load_denoiser_state
from smug_plugin.models.didn import DIDN
from smug_plugin.models.smug import SMUG
from smug_plugin.models.smug_engine import SMUGEngine

DENOISER = dict(denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
TINY = dict(num_steps=2, cg_iters=3, sigma=0.05, num_samples=2, **DENOISER)


class _RunsCode:
    """A pickled object whose unpickling would run a shell command (creating ``marker``)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def pretrained(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, torch.Tensor]]:
    """A checkpoint as `direct train` writes it for smug.didn.DIDN (optimizer, scheduler, metadata included)."""
    torch.manual_seed(3)
    model = DIDN(**DENOISER)
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.5, 0.999))
    scheduler = WarmupMultiStepLR(optimizer, [5], 0.5, warmup_factor=1 / 3, warmup_iterations=1)
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "__author__": "N/A",
        "__version__": direct.__version__,
        "__mixed_precision__": False,
        "__datetime__": "2025-01-01 00:00:00",
    }
    path = tmp_path / "model_5.pt"
    torch.save(checkpoint, path)
    return path, model.denoiser.state_dict()


def _load_error(path: pathlib.Path, setting: str = "denoiser_checkpoint") -> str:
    with pytest.raises(ValueError) as error_info:
        load_denoiser_state(SMUG(fft2, ifft2, **TINY).denoiser, path, setting=setting)
    message = str(error_info.value)
    assert "\n" not in message and str(path) in message and f"model.{setting}" in message
    return message


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, zip_format):
    marker = tmp_path / "marker"
    path = tmp_path / "model_1.pt"
    torch.save(
        {"model": {"denoiser.x": torch.zeros(1)}, "x": _RunsCode(marker)},
        path,
        **({} if zip_format else {"_use_new_zipfile_serialization": False}),
    )
    message = _load_error(path)
    assert not marker.exists()
    assert "would execute code" in message and "posix.system" in message
    assert "weights_only set to False" in message and 'torch.save({"model"' in message


def test_random_bytes_truncated_and_empty_files_are_reported_as_corrupt(tmp_path, pretrained):
    path, _ = pretrained
    corrupt = {
        "random.pt": os.urandom(4096),
        "truncated.pt": path.read_bytes()[: path.stat().st_size // 2],
        "empty.pt": b"",
    }
    for name, content in corrupt.items():
        (tmp_path / name).write_bytes(content)
        message = _load_error(tmp_path / name)
        assert "corrupt" in message and "point model.denoiser_checkpoint at a model_<iteration>.pt" in message


def test_a_checkpoint_that_is_not_a_state_dict_is_reported(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert "holds a Tensor" in _load_error(tmp_path / "tensor.pt")
    torch.save({"model": 3}, tmp_path / "int.pt")
    assert "without a state dict" in _load_error(tmp_path / "int.pt")


def test_no_denoiser_keys_or_other_shapes_are_reported(tmp_path):
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    assert "no denoiser weights" in _load_error(tmp_path / "other.pt")
    wide = DIDN(denoiser_hidden_channels=12, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
    torch.save({"model": wide.state_dict()}, tmp_path / "wide.pt")
    message = _load_error(tmp_path / "wide.pt", setting="ustab_frozen_denoiser_checkpoint")
    assert "another shape" in message and "(12," in message and "denoiser_hidden_channels" in message


def test_a_directory_or_absent_file_is_not_found(tmp_path):
    for path in (tmp_path, tmp_path / "absent.pt"):
        with pytest.raises(FileNotFoundError, match="model.denoiser_checkpoint"):
            load_denoiser_state(SMUG(fft2, ifft2, **TINY).denoiser, path)


def test_a_model_builds_and_runs_without_its_pre_training_file(tmp_path):
    # A fine-tuned checkpoint copied to another machine: the YAML still names the pre-training run's file.
    model = SMUG(fft2, ifft2, denoiser_checkpoint=str(tmp_path / "gone" / "model_5.pt"), **TINY).eval()
    mask = torch.ones(1, 1, 8, 6, 1)
    sens = torch.ones(1, 1, 8, 6, 2) / 2**0.5
    assert model(torch.randn(1, 1, 8, 6, 2), mask, sens).shape == (1, 8, 6, 2)


def _engine(denoiser_checkpoint: str | None, frozen_checkpoint: str | None) -> SMUGEngine:
    model_cfg = SMUGConfig(
        model_name="smug.smug.SMUG",
        denoiser_checkpoint=denoiser_checkpoint,
        ustab_frozen_denoiser_checkpoint=frozen_checkpoint,
        **TINY,
    )
    cfg = OmegaConf.structured(
        DefaultConfig(
            model=model_cfg,
            training=TrainingConfig(loss=LossConfig(losses=[FunctionConfig("l1_loss")])),
            validation=ValidationConfig(crop=None),
        )
    )
    model = SMUG(fft2, ifft2, **OmegaConf.to_container(cfg.model))
    return SMUGEngine(cfg, model, "cpu", fft2, ifft2)


@pytest.fixture
def direct_train_start(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Stands in for DIRECT's training loop: records the denoisers as DIRECT would start training them."""
    started = []

    def record(engine, *args, **kwargs):
        frozen = engine._frozen_denoiser
        started.append(
            {
                "denoiser": {k: v.clone() for k, v in engine.model.denoiser.state_dict().items()},
                "frozen": None if frozen is None else frozen.state_dict(),
            }
        )

    monkeypatch.setattr(MRIModelEngine, "train", record)
    return started


def _train(engine: SMUGEngine, directory: pathlib.Path, resume: bool = False, initialization=None) -> None:
    engine.train(None, None, [], directory, resume=resume, initialization=initialization)


def test_pretrained_denoisers_are_read_when_training_starts(tmp_path, pretrained, direct_train_start):
    path, weights = pretrained
    absent = tmp_path / "absent.pt"
    engine = _engine(str(absent), str(absent))  # building model and engine reads neither file
    assert any(not torch.equal(engine.model.denoiser.state_dict()[k], v) for k, v in weights.items())
    with pytest.raises(FileNotFoundError, match="model.ustab_frozen_denoiser_checkpoint"):
        _train(engine, tmp_path)

    engine = _engine(str(path), str(path))
    _train(engine, tmp_path)
    [started] = direct_train_start
    for state in (started["denoiser"], started["frozen"]):
        assert state.keys() == weights.keys()
        assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert not any(p.requires_grad for p in engine._frozen_denoiser.parameters())


def test_resuming_or_initialising_a_run_does_not_read_the_pre_training_file(tmp_path, pretrained, direct_train_start):
    path, weights = pretrained
    (tmp_path / "last_model.txt").write_text("5")  # DIRECT's mark of a run to resume
    engine = _engine(str(tmp_path / "absent.pt"), str(path))
    _train(engine, tmp_path, resume=True)  # the absent pre-training file is not needed: DIRECT loads model_5.pt
    [started] = direct_train_start
    assert all(torch.equal(started["frozen"][k], v) for k, v in weights.items())  # not in the run's checkpoints
    with pytest.raises(FileNotFoundError, match="model.denoiser_checkpoint"):
        _train(engine, tmp_path / "new_run", resume=True)  # nothing to resume: a fresh start needs the file
    _train(engine, tmp_path / "new_run", initialization=path)  # DIRECT loads all weights from `initialization`
    assert len(direct_train_start) == 2
