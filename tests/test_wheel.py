"""The wheel of this checkout works on its own: built without network, it ships the import hook and the package data,
and installed into a fresh environment that already has DIRECT and fastMRI (as a user's), it trains a plugin model
with that environment's `direct train` and evaluates it with `smug evaluate --protocol smoke`, run from outside the
checkout with no PYTHONPATH."""

import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from conftest import (
    PROJECTS_DIR,
    REPO_ROOT,
    TINY_COILS,
    TINY_MATRIX,
    TINY_SLICES,
    ProjectRuns,
    run_command,
    shrink_project,
)

pytestmark = pytest.mark.e2e

HOOK = "smug_plugin_hook.pth"
PACKAGE = "smug_plugin"
# Top-level folders of the checkout that the wheel ships inside the package (setup.py), one copy in the tree.
MAPPED = ("configs", "projects")


def _is_ours(name: str) -> bool:
    """Whether a site-packages entry belongs to this package's install (regular or editable)."""
    name = name.lower()
    return name.startswith(("smug_plugin", "smug-plugin")) or (name.startswith("__editable__") and "smug" in name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The wheel of the checkout, built by pip from a copy of its build inputs (the checkout gets no build/)."""
    source = tmp_path_factory.mktemp("source")
    for entry in REPO_ROOT.iterdir():
        if entry.is_file():  # setup.py, setup.cfg, pyproject.toml, README.md (the long description), ...
            shutil.copy2(entry, source)
    for folder in (PACKAGE, *MAPPED):  # the package, and the top-level folders setup.py maps into it
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    result = run_command([sys.executable, "-m", "pip", "wheel", str(source), *offline, "-w", str(dist)], cwd=dist)
    assert result.returncode == 0, result.stdout[-5000:]
    [built] = dist.glob("*.whl")
    return built


def test_wheel_ships_the_hook_and_every_package_file(wheel: pathlib.Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        hook = archive.read(HOOK).decode()  # at the root of the wheel, i.e. of site-packages
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert hook == (REPO_ROOT / PACKAGE / HOOK).read_text()
    assert "[direct.nn]\nsmug = smug_plugin.models" in entry_points
    shipped = {n for n in names if n.startswith(f"{PACKAGE}/")}
    package_files = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / PACKAGE).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.name != HOOK
    }
    mapped_files = {
        f"{PACKAGE}/{p.relative_to(REPO_ROOT).as_posix()}"
        for folder in MAPPED
        for p in (REPO_ROOT / folder).rglob("*.yaml")
    }
    assert shipped == package_files | mapped_files  # code and data (the Colin27 asset, protocols, projects) alike
    assert f"{PACKAGE}/data/assets/colin27_t1_slabs.npz" in shipped
    assert {f"{PACKAGE}/configs/robustness/paper.yaml", f"{PACKAGE}/projects/smug_knee.yaml"} <= shipped
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def existing_environment(venv: pathlib.Path, work: pathlib.Path) -> None:
    """Give ``venv`` every package of this interpreter's environment except this one, without copying them.

    Symbolic links to the entries of this environment's site-packages, in a folder that a ``.pth`` file adds as a
    site directory: pip and Python then see DIRECT, fastMRI and torch as installed in ``venv``. DIRECT's console
    script is written as pip writes it when it installs DIRECT.
    """
    linked = work / "existing-site-packages"
    linked.mkdir()
    for site_dir in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in pathlib.Path(site_dir).iterdir():
            if not _is_ours(entry.name) and not (linked / entry.name).exists():
                (linked / entry.name).symlink_to(entry)
    site_packages = subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (pathlib.Path(site_packages) / "existing_environment.pth").write_text(
        f"import site; site.addsitedir({str(linked)!r})\n"
    )
    direct = importlib.metadata.entry_points(group="console_scripts")["direct"]
    module, function = direct.value.split(":")
    script = venv / "bin" / "direct"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {function}\n"
        f"if __name__ == '__main__':\n    sys.exit({function}())\n"
    )
    script.chmod(0o755)


def test_wheel_in_a_fresh_environment_trains_and_evaluates(wheel: pathlib.Path, tmp_path: pathlib.Path) -> None:
    venv = tmp_path / "venv"
    created = run_command([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    assert created.returncode == 0, created.stdout
    existing_environment(venv, tmp_path)
    python, bin_dir = str(venv / "bin" / "python"), venv / "bin"
    # Outside the checkout, with nothing pointing back into it.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
        )

    # No index: pip may only find the dependencies already installed, and must not need to install any.
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    install = run(*pip, "install", "--no-index", str(wheel))
    assert install.returncode == 0, install.stdout
    [installed] = [
        line.split()[2:] for line in install.stdout.splitlines() if line.startswith("Successfully installed")
    ]
    assert len(installed) == 1 and installed[0].startswith("smug-plugin-"), install.stdout  # nothing else
    check = run(*pip, "check")
    assert check.returncode == 0, check.stdout

    where = run(
        python,
        "-c",
        "import sys, smug_plugin, direct.nn.smug.modl as m; print(smug_plugin.__file__); print(m.__file__); "
        "print('smug_plugin.direct_hook' in sys.modules)",
    )
    assert where.returncode == 0, where.stdout
    package, model, hooked = where.stdout.splitlines()
    site_packages = venv.resolve() / "lib"
    for path in (package, model):
        assert pathlib.Path(path).resolve().is_relative_to(site_packages), where.stdout
        assert not pathlib.Path(path).resolve().is_relative_to(REPO_ROOT), where.stdout
    assert hooked == "True"

    sizes = ["--matrix", *map(str, TINY_MATRIX), "--coils", str(TINY_COILS), "--slices-per-volume", str(TINY_SLICES)]
    volumes = ["--train-volumes", "1", "--val-volumes", "1", "--test-volumes", "1"]
    data = run(str(bin_dir / "smug"), "data", "demo", "--output-dir", "data", *sizes, *volumes)
    assert data.returncode == 0, data.stdout

    cfg = shrink_project(
        PROJECTS_DIR / "demo" / "modl.yaml", tmp_path / "modl.yaml", model_overrides={"denoiser_checkpoint": None}
    )
    common = ["--device", "cpu", "--num-workers", "0"]
    roots = ["--training-root", "data/train", "--validation-root", "data/val"]
    train = run(str(bin_dir / "direct"), "train", "runs", "--cfg", cfg.name, *roots, *common)
    assert train.returncode == 0, train.stdout[-5000:]
    checkpoint = ProjectRuns.checkpoint(tmp_path / "runs" / "modl")
    assert checkpoint.is_file(), train.stdout[-5000:]

    model_spec = f"m={cfg.name}:{checkpoint.relative_to(tmp_path)}"
    evaluate = run(
        str(bin_dir / "smug"),
        "evaluate",
        "--protocol",
        "smoke",  # a protocol shipped inside the package, by its short name
        "--model",
        model_spec,
        "--data-root",
        "data/test",
        "--output-dir",
        "robustness",
        "--max-slices",
        "2",
        "--batch-size",
        "2",
        "--no-progress",
    )
    assert evaluate.returncode == 0, evaluate.stdout[-5000:]
    report = json.loads((tmp_path / "robustness" / "robustness.json").read_text())
    assert report["protocol"]["name"] == "smoke"

    # The study projects ship too: listed, and copied with their checkpoint paths pointing into the folder.
    listed = run(str(bin_dir / "smug"), "projects", "list")
    assert listed.returncode == 0 and "smug_knee" in listed.stdout.split(), listed.stdout
    copied = run(str(bin_dir / "smug"), "projects", "copy", "smug_knee", "study")
    assert copied.returncode == 0, copied.stdout
    knee = (tmp_path / "study" / "smug_knee.yaml").read_text()
    assert f"denoiser_checkpoint: {tmp_path.resolve() / 'study' / 'runs' / 'didn_pretrain_knee'}" in knee
