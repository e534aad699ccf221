"""The foundation, end to end: ``direct train`` and ``direct predict`` of a plugin model, and the import hook that
makes the unmodified DIRECT find ``smug.*`` models, each in fresh interpreters as a user runs them."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from conftest import (
    ITERATIONS,
    PROJECTS_DIR,
    TINY_MATRIX,
    TINY_SLICES,
    ProjectRuns,
    direct_command,
    run_command,
    shrink_project,
)

HOOK_BUDGET_US = 5000


def python(code: str, env: dict | None = None, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment (site and ``.pth`` files included)."""
    return subprocess.run(
        [sys.executable, *args, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.e2e
def test_direct_train_and_predict_modl(
    tmp_path: pathlib.Path, tiny_demo_data: pathlib.Path, project_runs: ProjectRuns
) -> None:
    # The demo MoDL starts from the pre-trained denoiser, as in the README's workflow.
    pretrained = ProjectRuns.checkpoint(project_runs.train(PROJECTS_DIR / "demo" / "didn_pretrain.yaml"))
    cfg = shrink_project(
        PROJECTS_DIR / "demo" / "modl.yaml",
        tmp_path / "modl.yaml",
        model_overrides={"denoiser_checkpoint": str(pretrained)},
    )
    common = ["--device", "cpu", "--num-workers", "0"]
    train = run_command(
        direct_command("train", str(tmp_path / "runs"), "--cfg", str(cfg), *common)
        + ["--training-root", str(tiny_demo_data / "train"), "--validation-root", str(tiny_demo_data / "val")],
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stdout[-5000:]
    run = tmp_path / "runs" / "modl"  # DIRECT puts the run in a folder named after the config file
    checkpoint = ProjectRuns.checkpoint(run)
    assert checkpoint.is_file(), sorted(p.name for p in run.iterdir())
    assert (run / f"metrics_val_4x_{ITERATIONS - 1}.json").is_file()

    predict = run_command(
        direct_command("predict", str(tmp_path / "predictions"), "--cfg", str(cfg), "--checkpoint", str(checkpoint))
        + ["--data-root", str(tiny_demo_data / "test"), *common],
        cwd=tmp_path,
    )
    assert predict.returncode == 0, predict.stdout[-5000:]
    [output] = (tmp_path / "predictions").rglob("*.h5")
    assert output.name == next((tiny_demo_data / "test").glob("*.h5")).name
    with h5py.File(output) as h5:
        reconstruction = h5["reconstruction"][()]
    assert reconstruction.shape == (TINY_SLICES, *TINY_MATRIX)
    assert np.isfinite(reconstruction).all() and reconstruction.std() > 0


def hook_import_us(stderr: str) -> int:
    """Cumulative ``-X importtime`` microseconds of the outermost ``smug_plugin`` imports."""
    rows = re.findall(r"^import time:\s+\d+\s+\|\s+(\d+)\s+\|( +)(\S+)\s*$", stderr, flags=re.MULTILINE)
    mine = [(int(total), len(indent)) for total, indent, name in rows if name.split(".")[0] == "smug_plugin"]
    assert mine, "smug_plugin is not imported at interpreter start: is the .pth hook installed?"
    outermost = min(indent for _, indent in mine)
    return sum(total for total, indent in mine if indent == outermost)


def test_hook_costs_less_than_5_ms_at_startup() -> None:
    times = []
    for _ in range(3):
        result = python("pass", None, "-X", "importtime")
        assert result.returncode == 0, result.stderr
        times.append(hook_import_us(result.stderr))
    assert min(times) < HOOK_BUDGET_US, times


def test_hook_imports_neither_torch_nor_direct_at_startup() -> None:
    result = python("import sys; print('torch' in sys.modules, 'direct' in sys.modules, 'smug_plugin' in sys.modules)")
    assert result.stdout.split() == ["False", "False", "True"], result.stdout + result.stderr


def test_hook_resolves_plugin_modules_and_leaves_native_ones_alone() -> None:
    code = textwrap.dedent(
        """
        import importlib, sys
        try:
            importlib.import_module("direct.nn.smug.nope")
        except ModuleNotFoundError as error:
            print("ERROR", type(error).__name__, error)
        varnet = importlib.import_module("direct.nn.varnet.varnet")
        print("NATIVE", varnet.__name__, varnet.__file__)
        modl = importlib.import_module("direct.nn.smug.modl")
        print("ALIAS", modl is sys.modules["smug_plugin.models.modl"], sys.modules["direct.nn.smug.modl"] is modl)
        print("CLASS", getattr(importlib.import_module("direct.nn.smug.weighted_smug"), "WeightedSMUG").__module__)
        """
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" ", 1)[0]: line for line in result.stdout.splitlines()}
    assert "smug.modl.MoDL" in lines["ERROR"] and "direct.nn.smug.nope" in lines["ERROR"], result.stdout
    native = lines["NATIVE"].split()
    assert native[1] == "direct.nn.varnet.varnet"
    assert pathlib.Path(native[2]).parts[-4:] == ("direct", "nn", "varnet", "varnet.py")
    assert lines["ALIAS"] == "ALIAS True True"
    assert lines["CLASS"] == "CLASS smug_plugin.models.weighted_smug"


def test_python_works_when_direct_cannot_be_imported(tmp_path: pathlib.Path) -> None:
    # A `direct` package that shadows the installed one and fails to import, as a broken DIRECT install would.
    (tmp_path / "direct").mkdir()
    (tmp_path / "direct" / "__init__.py").write_text("raise ImportError('DIRECT is broken')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = textwrap.dedent(
        """
        import json, sys
        print(json.dumps({"ok": True}), "smug_plugin.direct_hook" in sys.modules)
        try:
            import direct.nn.smug
        except ImportError as error:
            print("IMPORT-ERROR", error)
        """
    )
    result = python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['{"ok": true} True', "IMPORT-ERROR DIRECT is broken"], result.stdout


def test_spawned_children_resolve_plugin_models(tmp_path: pathlib.Path) -> None:
    # DIRECT trains on several GPUs through torch.multiprocessing.spawn: children are fresh interpreters.
    script = tmp_path / "spawn_child.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing


            def child(queue):
                import importlib

                module = importlib.import_module("direct.nn.smug.modl")
                queue.put(f"{module.__name__} {module.MoDL.__name__}")


            if __name__ == "__main__":
                context = multiprocessing.get_context("spawn")
                queue = context.Queue()
                process = context.Process(target=child, args=(queue,))
                process.start()
                print(queue.get(timeout=120))
                process.join()
                print("exitcode", process.exitcode)
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["smug_plugin.models.modl MoDL", "exitcode 0"], result.stdout + result.stderr
