"""`smug data demo` and `smug metrics` on bad input and interruptions: exit 2, one line naming the problem and the fix,
no traceback, and nothing half-written: an earlier dataset stays intact until the new one is complete."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import PROJECTS_DIR

from smug_plugin.cli.main import main as smug_main
from smug_plugin.data import demo
from smug_plugin.data.demo import MANIFEST_NAME, make_demo_dataset

TINY = {
    "num_coils": 2,
    "matrix": (32, 24),
    "slices_per_volume": 1,
    "train_volumes": 1,
    "val_volumes": 1,
    "test_volumes": 0,
}
TINY_ARGS = ["--coils", "2", "--matrix", "32", "24", "--slices-per-volume", "1", "--test-volumes", "0"]
TINY_ARGS += ["--train-volumes", "1", "--val-volumes", "1"]


def snapshot(root: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(output: pathlib.Path) -> list[str]:
    """Hidden staging or swap folders beside ``output``."""
    return sorted(p.name for p in output.parent.glob(f".{output.name}.*"))


def demo_cli(output: pathlib.Path, *extra: str) -> int:
    return smug_main(["data", "demo", "--output-dir", str(output), *TINY_ARGS, *extra])


def one_line(text: str) -> str:
    """The only line of ``text``, with the error prefix of the ``smug`` commands."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("smug ") and "Traceback" not in text, text
    return lines[0]


@pytest.fixture
def earlier_run(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, bytes]]:
    """A tiny dataset of seed 0 in ``tmp_path/out`` and its bytes."""
    output = tmp_path / "out"
    make_demo_dataset(output, seed=0, **TINY)
    return output, snapshot(output)


def test_overwrite_replaces_the_earlier_run(earlier_run: tuple[pathlib.Path, dict[str, bytes]]) -> None:
    output, before = earlier_run
    assert demo_cli(output, "--seed", "1", "--overwrite") == 0
    after = snapshot(output)
    assert after.keys() == before.keys() and all(after[name] != before[name] for name in before)
    assert json.loads((output / MANIFEST_NAME).read_text())["parameters"]["seed"] == 1
    assert leftovers(output) == []


def test_failure_half_way_leaves_the_earlier_run_untouched(
    earlier_run: tuple[pathlib.Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    output, before = earlier_run
    simulate, calls = demo.simulate_slab, []

    def fail_on_second_volume(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure")
        return simulate(*args, **kwargs)

    monkeypatch.setattr(demo, "simulate_slab", fail_on_second_volume)
    with pytest.raises(RuntimeError, match="simulated failure"):
        make_demo_dataset(output, seed=1, overwrite=True, **TINY)
    assert len(calls) == 2  # the first new volume was written (into the staging folder) before the failure
    assert snapshot(output) == before
    assert leftovers(output) == []


def test_disk_full_gives_one_line_and_leaves_the_earlier_run(
    earlier_run: tuple[pathlib.Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    output, before = earlier_run

    def no_space(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(demo, "atomic_write_text", no_space)  # the manifest, written last
    assert demo_cli(output, "--seed", "1", "--overwrite") == 2
    message = one_line(capsys.readouterr().err)
    assert str(output) in message and "No space left on device" in message and "--output-dir" in message
    assert snapshot(output) == before
    assert leftovers(output) == []


def test_killed_run_leaves_the_earlier_run_and_the_next_run_cleans_up(
    earlier_run: tuple[pathlib.Path, dict[str, bytes]],
) -> None:
    output, before = earlier_run
    # SIGKILL in the middle of writing the new dataset: no Python clean-up runs.
    script = textwrap.dedent(
        f"""
        import os, signal
        from smug_plugin.data import demo

        simulate, calls = demo.simulate_slab, []
        def die_on_second_volume(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return simulate(*args, **kwargs)
        demo.simulate_slab = die_on_second_volume
        demo.make_demo_dataset({str(output)!r}, seed=1, overwrite=True, **{TINY!r})
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert snapshot(output) == before
    assert [name.split("-")[0] for name in leftovers(output)] == [".out.partial"]

    assert demo_cli(output, "--seed", "1", "--overwrite") == 0
    assert json.loads((output / MANIFEST_NAME).read_text())["parameters"]["seed"] == 1
    assert leftovers(output) == []


def test_swap_cut_between_its_renames_is_undone_by_the_next_run(
    earlier_run: tuple[pathlib.Path, dict[str, bytes]], capsys: pytest.CaptureFixture
) -> None:
    output, before = earlier_run
    # What a kill between the two renames of the swap leaves: the earlier data moved aside, a staging folder.
    output.rename(output.with_name(".out.previous"))
    (output.parent / ".out.partial-12345" / "train").mkdir(parents=True)
    assert demo_cli(output) == 2  # the earlier data are back, so the command refuses to mix without --overwrite
    assert "--overwrite" in one_line(capsys.readouterr().err)
    assert snapshot(output) == before
    assert leftovers(output) == []


def _read_only_parent(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:
        # Root ignores permission bits: have mkdir in that folder fail as the kernel fails it for other users.
        mkdir = pathlib.Path.mkdir

        def denied(self, *args, **kwargs):
            if self.parent == parent:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", denied)
    return parent / "out"


def _file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    (tmp_path / "out").write_text("not a folder\n")
    return tmp_path / "out"


def _under_a_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    (tmp_path / "file").write_text("not a folder\n")
    return tmp_path / "file" / "out"


def _foreign_files(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "my_scan.h5").write_bytes(b"someone else's data")
    return tmp_path / "out"


@pytest.mark.parametrize(
    ("make_output", "messages"),
    [
        (_file, ["is a file", "choose a folder"]),
        (_under_a_file, ["lies inside", "which is a file", "choose a folder"]),
        (_read_only_parent, ["cannot write", os.strerror(errno.EACCES), "writable --output-dir"]),
        (_foreign_files, ["my_scan.h5 was not written by `smug data demo`", "new or empty --output-dir"]),
    ],
    ids=["file", "under-a-file", "read-only-parent", "foreign-files"],
)
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["", "overwrite"])
def test_unusable_output_dir_exits_2(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    make_output,
    messages: list[str],
    overwrite: list[str],
) -> None:
    output = make_output(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    assert demo_cli(output, *overwrite) == 2
    message = one_line(capsys.readouterr().err)
    assert str(output) in message
    for text in messages:
        assert text in message
    assert snapshot(tmp_path) == before
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(tmp_path: pathlib.Path, umask: int, file_mode: int, dir_mode: int) -> None:
    previous = os.umask(umask)
    try:
        make_demo_dataset(tmp_path / "out", **TINY)
    finally:
        os.umask(previous)
    paths = [tmp_path / "out", *(tmp_path / "out").rglob("*")]
    modes = (
        {p.stat().st_mode & 0o777 for p in paths if p.is_file()},
        {p.stat().st_mode & 0o777 for p in paths if p.is_dir()},
    )
    assert modes == ({file_mode}, {dir_mode})


def write_run(root: pathlib.Path, content: str) -> pathlib.Path:
    """A run folder as `direct train` leaves it, whose last metrics file holds ``content``."""
    run = root / "modl"
    (run / "modl").mkdir(parents=True)
    good = {"a.h5": {"fastmri_psnr_metric": 20.0, "fastmri_ssim_metric": 0.5, "fastmri_nmse_metric": 0.1}}
    (run / "modl" / "metrics_val_4x_5.json").write_text(json.dumps(good))
    (run / "modl" / "metrics_val_4x_11.json").write_text(content)
    return run


GOOD_METRICS = json.dumps(
    {"a.h5": {"fastmri_psnr_metric": 30.0, "fastmri_ssim_metric": 0.7, "fastmri_nmse_metric": 0.05}}
)


@pytest.mark.parametrize(
    ("content", "runs", "zero_filled", "named", "messages"),
    [
        (GOOD_METRICS, ["absent"], [], "absent", ["has `direct train` validated this run yet?"]),
        ('{"a.h5": {"fastmri_psnr_metric": 3', ["modl"], [], "metrics_val_4x_11.json", ["not valid JSON", "delete"]),
        (
            '{"a.h5": {"loss": 1.0}}',
            ["modl"],
            [],
            "metrics_val_4x_11.json",
            ["fastmri_psnr_metric", "validation.metrics"],
        ),
        ("[1, 2]", ["modl"], [], "metrics_val_4x_11.json", ["holds no per-volume"]),
        (GOOD_METRICS, ["modl"], ["absent.yaml", "val"], "absent.yaml", ["does not exist", "training YAML"]),
        (GOOD_METRICS, ["modl"], ["broken.yaml", "val"], "broken.yaml", ["not valid YAML", "line 2"]),
        (GOOD_METRICS, ["modl"], ["training_only.yaml", "val"], "training_only.yaml", ["no validation.datasets"]),
        (GOOD_METRICS, ["modl"], ["modl.yaml", "absent"], "absent", ["not a folder", "--validation-root"]),
        (GOOD_METRICS, ["modl"], ["modl.yaml", "val"], "val", ["holds no h5 volume", "--validation-root"]),
    ],
    ids=[
        "missing-run",
        "invalid-json",
        "no-metric-keys",
        "not-a-mapping",
        "missing-config",
        "malformed-config",
        "config-without-validation",
        "missing-data-root",
        "empty-data-root",
    ],
)
def test_metrics_bad_input_exits_2_with_one_line(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture,
    content: str,
    runs: list[str],
    zero_filled: list[str],
    named: str,
    messages: list[str],
) -> None:
    write_run(tmp_path, content)
    (tmp_path / "val").mkdir()
    (tmp_path / "modl.yaml").write_text((PROJECTS_DIR / "demo" / "modl.yaml").read_text())
    (tmp_path / "broken.yaml").write_text("validation:\n\tdatasets: []\n")
    (tmp_path / "training_only.yaml").write_text("training:\n  num_iterations: 3\n")
    option = ["--zero-filled", *(str(tmp_path / p) for p in zero_filled)] if zero_filled else []
    assert smug_main(["metrics", *(str(tmp_path / r) for r in runs), *option]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no partial table
    message = one_line(captured.err)
    assert named in message
    for text in messages:
        assert text in message


def test_metrics_with_the_zero_filled_baseline(
    tmp_path: pathlib.Path, tiny_demo_data: pathlib.Path, capsys: pytest.CaptureFixture
) -> None:
    run = write_run(tmp_path, GOOD_METRICS)
    config = PROJECTS_DIR / "demo" / "modl.yaml"
    assert smug_main(["metrics", str(run), "--zero-filled", str(config), str(tiny_demo_data / "val")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2] == "| modl | 4x | 11 | 30.00 | 0.7000 | 0.0500 |"
    cells = [c.strip() for c in rows[3].strip("|").split("|")]
    assert cells[:3] == ["zero-filled", "4x", ""]
    psnr, ssim, nmse = map(float, cells[3:])
    assert 5 < psnr < 60 and 0 < ssim < 1 and 0 < nmse < 1


def _nan_sample(data: pathlib.Path) -> None:
    import h5py
    import numpy as np

    path = next(data.glob("*.h5"))
    with h5py.File(path, "r+") as f:
        kspace = f["kspace"][()]
        kspace[0, 0, 0, 0] = np.nan
        f["kspace"][...] = kspace


def _contradicting_header(data: pathlib.Path) -> None:
    import re

    import h5py

    path = next(data.glob("*.h5"))
    with h5py.File(path, "r+") as f:
        header = f["ismrmrd_header"][()].decode()
        del f["ismrmrd_header"]
        # The encoded matrix's y (the k-space width) one wider than the k-space.
        f["ismrmrd_header"] = re.sub(
            r"(<encodedSpace>.*?<y>)(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) + 8}", header, count=1, flags=re.S
        )


@pytest.mark.parametrize(
    ("spoil", "messages"),
    [(_nan_sample, ["holds NaN or inf", "slice 0"]), (_contradicting_header, ["encodedSpace"])],
    ids=["nan-sample", "contradicting-header"],
)
def test_zero_filled_on_spoilt_data_is_one_line_not_a_row_of_nan(
    tmp_path: pathlib.Path, tiny_demo_data: pathlib.Path, capsys: pytest.CaptureFixture, spoil, messages
) -> None:
    import shutil

    run = write_run(tmp_path, GOOD_METRICS)
    data = pathlib.Path(shutil.copytree(tiny_demo_data / "val", tmp_path / "val"))
    spoil(data)
    config = PROJECTS_DIR / "demo" / "modl.yaml"
    assert smug_main(["metrics", str(run), "--zero-filled", str(config), str(data)]) == 2
    captured = capsys.readouterr()
    message = one_line(captured.err)
    assert captured.out == "" and "Traceback" not in captured.err and "nan" not in message.split(":")[0]
    for text in [next(data.glob("*.h5")).name, *messages]:
        assert text in message


def test_zero_filled_on_a_loop_of_links_names_it(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    run = write_run(tmp_path, GOOD_METRICS)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    config = PROJECTS_DIR / "demo" / "modl.yaml"
    assert smug_main(["metrics", str(run), "--zero-filled", str(config), str(loop)]) == 2
    assert "loop of symbolic links" in one_line(capsys.readouterr().err)
