"""Bad plugin input under the unmodified ``direct train``: one line naming the file, the key and the fix."""

import pathlib
import subprocess

import pytest
from conftest import PROJECTS_DIR, direct_command, shrink_project

from smug_plugin.direct_hook import is_plugin_input_error


def direct_train(cfg: pathlib.Path, data: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    roots = ["--training-root", str(data / "train"), "--validation-root", str(data / "val")]
    command = direct_command("train", str(cwd / "runs"), "--cfg", str(cfg), *roots, "--device", "cpu")
    return subprocess.run(
        [*command, "--num-workers", "0"], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"denoiser_checkpoint": "{tmp}/random.pt"}, ["random.pt", "not a PyTorch checkpoint", "point model."]),
        ({"unknown_key": 3}, ["'unknown_key'", "SMUGConfig", "valid keys:", "num_samples"]),
        ({"num_samples": 2.5}, ["'2.5'", "`model.num_samples`", "must be of type int"]),
    ],
    ids=["corrupt-denoiser-checkpoint", "unknown-model-key", "fractional-count"],
)
def test_direct_train_reports_plugin_input_errors_in_one_line(tiny_demo_data, tmp_path, overrides, expected):
    (tmp_path / "random.pt").write_bytes(b"\x00not a checkpoint" * 8)
    overrides = {k: (v.format(tmp=tmp_path) if isinstance(v, str) else v) for k, v in overrides.items()}
    cfg = shrink_project(PROJECTS_DIR / "demo" / "smug.yaml", tmp_path / "smug.yaml", model_overrides=overrides)
    result = direct_train(cfg, tiny_demo_data, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("direct: error: ")
    assert all(text in last for text in expected), last
    if "denoiser_checkpoint" not in overrides:
        assert str(cfg) in last


def _raise_in_plugin_code():
    from smug_plugin.models.checkpoint import read_model_state

    read_model_state(pathlib.Path("/nonexistent/model_0.pt"), "denoiser_checkpoint")


def test_only_the_plugins_own_input_errors_are_shortened():
    with pytest.raises(FileNotFoundError) as raised:
        _raise_in_plugin_code()
    assert is_plugin_input_error(raised.value)
    with pytest.raises(ValueError) as elsewhere:
        raise ValueError("a bug outside the plugin keeps its traceback")
    assert not is_plugin_input_error(elsewhere.value)
    with pytest.raises(ZeroDivisionError) as bug:
        _ = 1 / 0
    assert not is_plugin_input_error(bug.value)


def test_config_errors_are_shortened_only_for_the_plugins_config_classes():
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    from smug_plugin.models.config import SMUGConfig

    with pytest.raises(ConfigKeyError) as plugin:
        OmegaConf.merge(OmegaConf.structured(SMUGConfig), {"unknown_key": 1})
    assert is_plugin_input_error(plugin.value)

    from direct.config.defaults import ModelConfig

    with pytest.raises(ConfigKeyError) as host:
        OmegaConf.merge(OmegaConf.structured(ModelConfig), {"unknown_key": 1})
    assert "ModelConfig" in str(host.value) and not is_plugin_input_error(host.value)


class _RunsCode:
    """A pickled object whose unpickling would run a shell command creating ``marker``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _load_as_direct_does(checkpoint_path: pathlib.Path):
    """DIRECT's `Checkpointer._load_checkpoint`: torch.load without weights_only (torch >= 2.6: weights only)."""
    import torch

    return torch.load(checkpoint_path, map_location="cpu")


@pytest.mark.parametrize("kind", ["malformed", "python tag", "refused checkpoint"])
def test_direct_train_input_errors_are_one_line(tmp_path, monkeypatch, capsys, kind):
    import sys

    import torch
    from omegaconf import OmegaConf

    from smug_plugin.direct_hook import _one_line_errors

    cfg, marker = tmp_path / "train.yaml", tmp_path / "executed"
    monkeypatch.setattr(sys, "argv", ["direct", "train", "runs", "--cfg", str(cfg)])
    try:
        if kind == "malformed":
            cfg.write_text("model:\n  model_name: smug.smug.SMUG\n  num_steps: [2\n")
            OmegaConf.load(cfg)
        elif kind == "python tag":
            cfg.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
            OmegaConf.load(cfg)
        else:
            torch.save({"model": _RunsCode(marker)}, tmp_path / "model_5.pt")
            _load_as_direct_does(tmp_path / "model_5.pt")
        raise AssertionError("no error")
    except Exception as error:  # what reaches the excepthook of `direct train`
        _one_line_errors(lambda *a: pytest.fail("the traceback would be printed"))(type(error), error, None)
    err = capsys.readouterr().err
    expected = {
        "malformed": [str(cfg), "not valid YAML", "line 4", "fix the file"],
        "python tag": [str(cfg), "python/object/apply:os.system", "nothing was executed", "remove the tag"],
        "refused checkpoint": [str(tmp_path / "model_5.pt"), "weights_only=True", "nothing was run"],
    }[kind]
    assert err.count("\n") == 1 and err.startswith("direct: error: ")
    assert all(text in err for text in expected), err
    assert not marker.exists()


@pytest.mark.e2e
def test_direct_train_with_a_python_tag_in_its_yaml_is_one_line(tiny_demo_data, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"model: !!python/object/apply:os.system ['touch {tmp_path / 'executed'}']\n")
    result = direct_train(cfg, tiny_demo_data, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("direct: error: ") and str(cfg) in last and "remove the tag" in last
    assert not (tmp_path / "executed").exists()
