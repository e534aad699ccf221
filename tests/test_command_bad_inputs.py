"""The standing bad-input suite of every ``smug`` sub-command (issue 21): one set of checks protects them all.

Each class of bad input is tried on every command it applies to; each case asserts the exit status, the one-line
message (naming what is wrong) and that nothing was written outside the output folder (the whole temporary tree of
the test is compared before and after).
"""

import json
import os
import pathlib
import shutil

import h5py
import pytest
import torch
from conftest import restored_logging_and_threads
from robustness_fixtures import make_setup, write_direct_yaml

from smug_plugin.cli.main import main
from smug_plugin.robustness.reconstructors import direct_engines as checkpoints
from smug_plugin.robustness.run.output_lock import output_dir_lock

NOISE = "perturbations: [{name: clean, kind: clean}, {name: noise, kind: gaussian, budget: 0.01}]\n"
MODEL_COMMANDS = ("evaluate", "bound", "small-features")
DATA_COMMANDS = ("evaluate", "bound", "small-features", "cs-tune")
FOLDER_COMMANDS = ("evaluate", "bound", "small-features", "shifts")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("command_bad_inputs")
    with restored_logging_and_threads():
        setup = make_setup(root, ("smug",))
    setup["protocol"] = root / "noise.yaml"
    setup["protocol"].write_text(NOISE)
    setup["config"], setup["checkpoint"] = root / "smug" / "config.yaml", root / "smug" / "model_0.pt"
    setup["evaluation"] = root / "evaluation"
    assert run(command_args("evaluate", setup, setup["evaluation"])) == 0
    return setup


def run(argv: list[str]) -> int:
    with restored_logging_and_threads():  # DIRECT binds its log handlers to this test's captured output
        return main(argv)


def command_args(command: str, setup: dict, out: pathlib.Path, models=None, data=None) -> list[str]:
    """The arguments of a small, fast run of ``command`` into ``out`` (``models``: ``--model`` values)."""
    data = str(data or setup["data"])
    models = models or [f"m={setup['config']}:{setup['checkpoint']}"]
    model_args = [a for spec in models for a in ("--model", spec)]
    if command == "evaluate":
        rest = ["--protocol", str(setup["protocol"]), "--max-slices", "2", "--no-progress", "--threads", "1"]
        return ["evaluate", *model_args, "--data-root", data, "--output-dir", str(out), *rest]
    if command == "bound":
        rest = ["--power-iterations", "2", "--max-slices", "2", "--threads", "1"]
        return ["bound", *model_args, "--data-root", data, "--output-dir", str(out), *rest]
    if command == "small-features":
        rest = ["--stride", "16", "--window-batch", "4", "--max-slices", "1", "--threads", "1"]
        return ["small-features", *model_args, "--data-root", data, "--output-dir", str(out), *rest]
    if command == "cs-tune":
        rest = ["--weights", "1e-3", "--iterations", "2", "--max-slices", "2", "--threads", "1"]
        model = f"{setup['config']}:{setup['checkpoint']}"
        out.mkdir(exist_ok=True)  # it writes one file (here out/cs.yaml), into an existing folder
        return ["cs-tune", "--data-model", model, "--data-root", data, "--output", str(out / "cs.yaml"), *rest]
    if command == "shifts":
        evaluation = str(setup["evaluation"])
        return ["shifts", "--in-distribution", evaluation, "--shifted", f"knee={evaluation}", "--output-dir", str(out)]
    raise AssertionError(command)


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every path under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath) / name
            stat = path.lstat()
            out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


def written_outside(root: pathlib.Path, before: dict, out: pathlib.Path) -> list[str]:
    """Paths under ``root`` created or changed since ``before`` that are not ``out`` or below it."""
    after = snapshot(root)
    changed = [p for p, facts in after.items() if before.get(p) != facts]
    return [p for p in changed if p != str(out) and not p.startswith(str(out) + os.sep)]


def one_error_line(err: str, command: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"smug {command}: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in: {errors[0]}"
    return errors[0]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if a model is loaded: the input must be refused before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(checkpoints, "load_reconstructor", refuse)


# --- 1. display names never reach the file system unsanitised ------------------------------------------------------


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_a_path_like_model_name_writes_nothing_outside_the_output_folder(setup, tmp_path, command, kind):
    out = tmp_path / "out"
    # From out/direct_logs, "../../escaped" is tmp_path/escaped; an absolute name would be that path itself.
    name = "../../escaped" if kind == "relative" else str(tmp_path / "escaped")
    before = snapshot(tmp_path)
    assert run(command_args(command, setup, out, models=[f"{name}={setup['config']}:{setup['checkpoint']}"])) == 0
    assert written_outside(tmp_path, before, out) == []
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize(
    "names, needles",
    [
        (("a b", "a_b"), ["'a_b'", "'a b'", "share the file name 'a_b'"]),
        (("réseau", "rèseau"), ["share the file name 'r_seau'"]),
        (("m", "m"), ["is given twice"]),
        (("schema",), ["reserved"]),
    ],
    ids=["space", "non-ASCII", "twice", "reserved"],
)
def test_names_that_would_share_a_file_are_refused(setup, tmp_path, capsys, no_model_loading, command, names, needles):
    out = tmp_path / "out"
    models = [f"{n}={setup['config']}:{setup['checkpoint']}" for n in names]
    before = snapshot(tmp_path)
    assert run(command_args(command, setup, out, models=models)) == 2
    one_error_line(capsys.readouterr().err, command, "--model", *needles)
    assert written_outside(tmp_path, before, out) == [] and not out.exists()


# --- 2. a resume without the manifest ------------------------------------------------------------------------------


@pytest.fixture
def interrupted(setup, tmp_path) -> pathlib.Path:
    """An evaluation folder whose manifest was deleted."""
    out = tmp_path / "out"
    shutil.copytree(setup["evaluation"], out)
    (out / "manifest.json").unlink()
    (out / "robustness.json").unlink()
    return out


@pytest.mark.parametrize("change", ["--seed", "protocol budget"])
def test_a_resume_without_the_manifest_refuses_records_of_another_run(setup, tmp_path, capsys, interrupted, change):
    args = command_args("evaluate", setup, interrupted)
    if change == "--seed":
        args += ["--seed", "9"]
    else:
        other = tmp_path / "other.yaml"
        other.write_text(NOISE.replace("0.01", "0.02"))  # the same names, another eps
        args[args.index("--protocol") + 1] = str(other)
    records = (interrupted / "records.jsonl").read_bytes()
    assert run([*args, "--resume"]) == 2
    one_error_line(capsys.readouterr().err, "evaluate", f"Cannot resume in {interrupted}", "protocol, seed, models")
    assert (interrupted / "records.jsonl").read_bytes() == records


def test_a_resume_without_the_manifest_continues_the_same_run(setup, tmp_path, interrupted):
    records = (interrupted / "records.jsonl").read_bytes()
    assert run([*command_args("evaluate", setup, interrupted), "--resume"]) == 0
    assert (interrupted / "records.jsonl").read_bytes() == records  # every unit was done: nothing recomputed
    assert json.loads((interrupted / "manifest.json").read_text())["seed"] == 0


# --- 3. downstream commands check the evaluation folder ------------------------------------------------------------


def test_bound_refuses_a_killed_evaluation(setup, tmp_path, capsys):
    evaluation = pathlib.Path(shutil.copytree(setup["evaluation"], tmp_path / "evaluation"))
    report = json.loads((evaluation / "robustness.json").read_text())
    report["run"]["complete"] = False
    (evaluation / "robustness.json").write_text(json.dumps(report))
    out = tmp_path / "out"
    assert run([*command_args("bound", setup, out), "--evaluation", str(evaluation), "--perturbation", "noise"]) == 2
    one_error_line(capsys.readouterr().err, "bound", str(evaluation), "did not finish", "--resume")
    assert not out.exists()


def test_bound_refuses_a_model_of_the_same_name_with_other_settings(setup, tmp_path, capsys):
    other = write_direct_yaml(tmp_path / "sigma.yaml", "smug", sigma=0.5)
    out = tmp_path / "out"
    models = [f"m={other}:{setup['checkpoint']}"]
    assert (
        run(
            [
                *command_args("bound", setup, out, models=models),
                "--evaluation",
                str(setup["evaluation"]),
                "--perturbation",
                "noise",
            ]
        )
        == 2
    )
    one_error_line(capsys.readouterr().err, "bound", "model 'm' is not this one", "'sigma': 0.05", "'sigma': 0.5")


def test_bound_refuses_an_evaluation_of_none_of_its_models(setup, tmp_path, capsys):
    # A name that differs from the evaluation's (say "MoDL" against "MoDL s0") would leave every ratio n/a.
    out = tmp_path / "out"
    models = [f"renamed={setup['config']}:{setup['checkpoint']}"]
    argv = [*command_args("bound", setup, out, models=models), "--evaluation", str(setup["evaluation"])]
    assert run([*argv, "--perturbation", "noise"]) == 2
    one_error_line(capsys.readouterr().err, "bound", "evaluated none of the models renamed", "(it has m)")
    assert not (out / "bound.json").exists()


def test_bound_refuses_an_evaluation_of_other_data(setup, tmp_path, capsys):
    data = pathlib.Path(shutil.copytree(setup["data"], tmp_path / "data"))
    (data / "file1.h5").unlink()
    out = tmp_path / "out"
    argv = [
        *command_args("bound", setup, out, data=data),
        "--evaluation",
        str(setup["evaluation"]),
        "--perturbation",
        "noise",
    ]
    assert run(argv) == 2
    one_error_line(capsys.readouterr().err, "bound", "evaluated other data", str(data))


def test_bound_puts_the_measured_ratio_of_a_matching_evaluation_beside_the_constants(setup, tmp_path):
    out = tmp_path / "out"
    argv = [*command_args("bound", setup, out), "--evaluation", str(setup["evaluation"]), "--perturbation", "noise"]
    assert run(argv) == 0
    row = json.loads((out / "bound.json").read_text())["models"][0]
    assert row["measured_slices"] == 2 and row["measured_ratio_mean"] > 0


# --- 5. the same data checks, lock and output-folder checks for every command --------------------------------------


def _truncate(data: pathlib.Path) -> None:
    content = (data / "file0.h5").read_bytes()
    (data / "file0.h5").write_bytes(content[: len(content) // 2])


def _contradict(data: pathlib.Path) -> None:
    with h5py.File(data / "file0.h5", "r+") as f:
        header = f["ismrmrd_header"][()].decode()
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = header.replace("<y>24</y>", "<y>32</y>", 1)


REPORTS = {
    "evaluate": ("robustness.json", lambda doc: doc["data_issues"]),
    "bound": ("bound.json", lambda doc: doc["facts"]["data_issues"]),
    "small-features": ("small_features.json", lambda doc: doc["data_issues"]),
}


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_a_truncated_file_is_warned_about_and_listed_in_the_report(setup, tmp_path, capsys, command):
    data = pathlib.Path(shutil.copytree(setup["data"], tmp_path / "data"))
    _truncate(data)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    assert run(command_args(command, setup, out, data=data)) == 0
    assert f"smug {command}: WARNING: file0.h5: skipped" in capsys.readouterr().err
    assert written_outside(tmp_path, before, out) == []
    if command == "cs-tune":
        import yaml

        issues = yaml.safe_load((out / "cs.yaml").read_text())["tuning"]["data_issues"]
    else:
        name, get = REPORTS[command]
        issues = get(json.loads((out / name).read_text()))
    assert [issue["file"] for issue in issues] == ["file0.h5"] and "truncated" in issues[0]["problem"]


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_a_header_that_contradicts_the_kspace_is_one_line_before_loading(
    setup, tmp_path, capsys, no_model_loading, command
):
    data = pathlib.Path(shutil.copytree(setup["data"], tmp_path / "data"))
    _contradict(data)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    assert run(command_args(command, setup, out, data=data)) == 2
    one_error_line(capsys.readouterr().err, command, str(data / "file0.h5"), "encodedSpace matrixSize y=32")
    assert written_outside(tmp_path, before, out) == [] and not (out.exists() and any(out.iterdir()))


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_a_data_root_that_is_a_loop_of_links_is_named(setup, tmp_path, capsys, no_model_loading, command):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert run(command_args(command, setup, tmp_path / "out", data=loop)) == 2
    one_error_line(capsys.readouterr().err, command, f"--data-root {loop}", "loop of symbolic links")


def _a_file(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    return tmp_path / "results", ["is a file, not a folder"]


def _below_a_file(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    return tmp_path / "results" / "run", ["is a file, not a folder"]


def _proc(tmp_path):
    return pathlib.Path("/proc/smug-test-output"), ["virtual file system"]


def _unwritable(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "run", ["not writable"]


OUTPUT_PROBLEMS = {"a file": _a_file, "below a file": _below_a_file, "/proc": _proc, "unwritable": _unwritable}


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
@pytest.mark.parametrize("problem", list(OUTPUT_PROBLEMS))
def test_an_unusable_output_dir_is_one_line_before_loading(
    setup, tmp_path, capsys, monkeypatch, no_model_loading, command, problem
):
    out, needles = OUTPUT_PROBLEMS[problem](tmp_path)
    if problem == "unwritable" and os.geteuid() == 0:  # root writes anywhere: what a user without rights sees
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and pathlib.Path(p) != out.parent)
    before = snapshot(tmp_path)
    assert run(command_args(command, setup, out)) == 2
    one_error_line(capsys.readouterr().err, command, f"--output-dir {out}", *needles)
    assert written_outside(tmp_path, before, out) == []


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_folder_in_use_by_another_run_is_refused(setup, tmp_path, capsys, no_model_loading, command):
    out = tmp_path / "out"
    with output_dir_lock(out, "smug evaluate"):
        assert run(command_args(command, setup, out)) == 2
    one_error_line(capsys.readouterr().err, command, str(out), "in use by another smug run", "smug evaluate, pid")


def test_cs_tune_output_problems_are_one_line(setup, tmp_path, capsys, no_model_loading):
    argv = command_args("cs-tune", setup, tmp_path)
    argv[argv.index("--output") + 1] = str(tmp_path)
    assert run(argv) == 2
    one_error_line(capsys.readouterr().err, "cs-tune", f"--output {tmp_path} is a folder")
    argv[argv.index("--output") + 1] = "/proc/cs.yaml"
    assert run(argv) == 2
    one_error_line(capsys.readouterr().err, "cs-tune", "virtual file system")


# --- 6. a checkpoint with NaN weights --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_checkpoint_with_nan_weights_names_the_tensor(setup, tmp_path, capsys, command):
    state = torch.load(setup["checkpoint"], weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    bad = tmp_path / "model_9.pt"
    torch.save(state, bad)
    out = tmp_path / "out"
    assert run(command_args(command, setup, out, models=[f"m={setup['config']}:{bad}"])) == 2
    one_error_line(capsys.readouterr().err, command, str(bad), f"tensor '{name}'", "NaN or inf")
    assert not any(out.glob("*.json"))


# --- 7. clear errors -----------------------------------------------------------------------------------------------


def test_cs_tune_data_model_without_a_checkpoint_names_its_own_option(setup, tmp_path, capsys, no_model_loading):
    argv = command_args("cs-tune", setup, tmp_path)
    argv[argv.index("--data-model") + 1] = str(setup["config"])
    assert run(argv) == 2
    line = one_error_line(capsys.readouterr().err, "cs-tune", f"--data-model {setup['config']}", "CONFIG.yaml:CHECK")
    assert "--model" not in line and "data=" not in line


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_checkpoint_that_names_another_model_is_refused_without_its_config(setup, tmp_path, capsys, command):
    """A MoDL checkpoint copied away from its run's config.yaml fits a SMUG YAML key for key; the model name stored
    in the checkpoint is what tells them apart."""
    state = torch.load(setup["checkpoint"], weights_only=True)
    moved = tmp_path / "elsewhere" / "model_9.pt"
    moved.parent.mkdir()
    torch.save({**state, checkpoints.MODEL_NAME_KEY: "smug.modl.MoDL"}, moved)
    out = tmp_path / "out"
    assert run(command_args(command, setup, out, models=[f"m={setup['config']}:{moved}"])) == 2
    one_error_line(capsys.readouterr().err, command, str(moved), "trained as smug.modl.MoDL", "smug.smug.SMUG")
