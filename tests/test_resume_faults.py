"""Nothing wrong, nothing lost: seeds that name what they are for, a record store that counts each unit once, one run
per output folder, and ``smug evaluate`` killed at several points and resumed giving every per-slice value of an
uninterrupted run, for a randomized plugin model (SMUG) and a deterministic DIRECT model (VarNet)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import smug_command
from robustness_fixtures import make_setup

from smug_plugin.cli.main import main
from smug_plugin.robustness.run.output_lock import LOCK, OutputDirLocked, output_dir_lock
from smug_plugin.robustness.run.records import RECORDS, RecordStore, RecordStoreError, load_panels, prepare_output

# Every kind of seed use: the clean reconstruction (output, attack target, rob_err reference), matched noise, PGD's
# random start and noise draws, a test-time shift (the clean reconstruction under other settings) and a data shift.
PROTOCOL = """
name: faults
seed: 7
perturbations:
  - {name: clean, kind: clean}
  - {name: noise, kind: gaussian, norm: linf, budget: {value: 0.05, convention: absolute}}
  - {name: pgd, kind: pgd, norm: linf, budget: {value: 0.05, convention: absolute}, steps: 1}
  - {name: pgd_clean, kind: pgd, norm: l2, budget: {value: 0.05, convention: relative_l2}, steps: 1, target: clean}
sweeps:
  sigma: {values: [0.1], perturbations: [clean, pgd_clean]}
  acceleration: {values: [8], perturbations: [clean]}
"""
SLICES = 3  # batches of one slice: 3 x (4 main + 2 sigma) units on the default data, 3 on the 8x data
UNITS = SLICES * 6 + SLICES
TIMEOUT = 120


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("faults")
    setup = make_setup(root, ("smug", "varnet"))
    (root / "faults.yaml").write_text(PROTOCOL)
    return {**setup, "protocol": root / "faults.yaml"}


def _arguments(setup: dict, out: pathlib.Path, *extra: str) -> list[str]:
    models = sum([["--model", spec] for spec in setup["specs"]], [])
    data = ["--data-root", str(setup["data"]), "--output-dir", str(out), "--max-slices", str(SLICES)]
    return ["evaluate", *models, "--protocol", str(setup["protocol"]), *data, "--batch-size", "1", *extra]


def _start(setup: dict, out: pathlib.Path, *extra: str) -> subprocess.Popen:
    command = smug_command(*_arguments(setup, out, "--no-progress", "--threads", "1", *extra))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _markers(out: pathlib.Path) -> int:
    try:
        return (out / RECORDS).read_text().count('"type": "done"')
    except FileNotFoundError:
        return 0


def _kill_after(process: subprocess.Popen, out: pathlib.Path, markers: int) -> str:
    """SIGKILL ``process`` as soon as ``records.jsonl`` holds ``markers`` done markers; return its stderr."""
    deadline = time.monotonic() + TIMEOUT
    while _markers(out) < markers and process.poll() is None:
        assert time.monotonic() < deadline, "smug evaluate made no progress"
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before it could be killed: {process.communicate()[1][-2000:]}"
    process.send_signal(signal.SIGKILL)
    return process.communicate(timeout=TIMEOUT)[1]


def _values(records: list[dict]) -> dict:
    """Every per-slice value but the timing, as JSON text (so NaN equals NaN), keyed by unit, model and slice."""
    values = {}
    for r in records:
        key = (r["data"], r["condition"], r["model"], r["file"], r["slice"])
        assert key not in values, f"{key} recorded twice"
        values[key] = {k: json.dumps(v) for k, v in r.items() if k != "seconds"}
    return values


def _per_slice(out: pathlib.Path) -> dict:
    return _values(json.loads((out / "robustness.json").read_text())["records"])


@pytest.mark.e2e
def test_killed_and_resumed_runs_give_every_value_of_an_uninterrupted_run(setup, tmp_path, capsys):
    reference_dir, resumed_dir = tmp_path / "uninterrupted", tmp_path / "resumed"
    reference = _start(setup, reference_dir)

    # A second run into the folder of a running one is refused at once, naming the folder, the owner and the fix.
    deadline = time.monotonic() + TIMEOUT
    while not (reference_dir / LOCK).exists():
        assert reference.poll() is None and time.monotonic() < deadline, reference.communicate()[1][-2000:]
        time.sleep(0.01)
    threads = torch.get_num_threads()
    try:
        assert main(_arguments(setup, reference_dir, "--no-progress", "--threads", "1", "--resume")) == 2
    finally:
        torch.set_num_threads(threads)
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(reference_dir) in error and "another --output-dir" in error
    assert f"pid {reference.pid} on host {socket.gethostname()}" in error
    assert reference.poll() is None, "the uninterrupted run ended before the second run was tried"

    # Killed after the first unit, after half of them, after the last (while writing the reports), then resumed.
    for markers in (1, UNITS // 2, UNITS):
        _kill_after(_start(setup, resumed_dir, *(["--resume"] if markers > 1 else [])), resumed_dir, markers)
    resumed = _start(setup, resumed_dir, "--resume")
    stderr = resumed.communicate(timeout=TIMEOUT)[1]
    assert resumed.returncode == 0, stderr[-3000:]
    assert "taking over the lock" in stderr and "ended without releasing it" in stderr
    assert reference.wait(timeout=TIMEOUT) == 0, reference.communicate()[1][-3000:]

    expected, got = _per_slice(reference_dir), _per_slice(resumed_dir)
    assert len(expected) == UNITS * 2 - 2 * SLICES  # VarNet has no sigma: n/a under the 2 sigma conditions
    assert got == expected
    assert {k[2] for k in got} == {"smug", "varnet"}
    summary = json.loads((resumed_dir / "robustness.json").read_text())["summary"]
    assert {row["n_slices"] for row in summary if row["status"] == "ok"} == {SLICES}
    assert (resumed_dir / "panels.png").read_bytes()[:4] == b"\x89PNG"
    assert not (resumed_dir / LOCK).exists() and not (reference_dir / LOCK).exists()


def _load(setup: dict, names: tuple[str, ...], log_dir: pathlib.Path) -> list:
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor

    specs = {spec.split("=")[0]: spec for spec in setup["specs"]}
    return [load_reconstructor(ModelSpec.parse(specs[name]), "cpu", log_dir) for name in names]


def _evaluate(setup: dict, models: list, protocol_text: str, out: pathlib.Path) -> dict:
    """Per-slice values of an in-process evaluation, keyed by condition, model and slice."""
    from smug_plugin.robustness.run.loop import Evaluator, RunSettings
    from smug_plugin.robustness.run.protocol import load_protocol

    out.mkdir()
    (out / "p.yaml").write_text(protocol_text)
    settings = RunSettings(setup["data"], out, seed=3, max_slices=2, batch_size=2, progress=False)
    store = RecordStore(out / RECORDS)
    Evaluator(models, load_protocol(out / "p.yaml"), settings).run(store)
    return _values(store.records)


@pytest.fixture
def one_thread():
    """Tiny models run many times faster on one torch thread than on cores other processes use too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_seeds_do_not_depend_on_the_order_of_conditions_or_on_the_other_models(setup, tmp_path, one_thread):
    smug, varnet = _load(setup, ("smug", "varnet"), tmp_path / "logs")
    entries = [
        "  - {name: clean, kind: clean}\n",
        "  - {name: noise, kind: gaussian, budget: {value: 0.05, convention: absolute}}\n",
        "  - {name: pgd_clean, kind: pgd, norm: l2, budget: 0.05, steps: 1, target: clean}\n",
    ]
    forward = _evaluate(setup, [smug, varnet], "perturbations:\n" + "".join(entries), tmp_path / "forward")
    # Another condition computes the clean reconstruction first, and SMUG is evaluated alone.
    backward = _evaluate(setup, [smug], "perturbations:\n" + "".join(reversed(entries)), tmp_path / "backward")
    smug_only = {k: v for k, v in forward.items() if k[2] == "smug"}
    assert len(backward) == 6 and backward == smug_only
    # The clean reconstruction's seed names the model, the data and the batch, not the condition.
    assert len({values["clean_seed"] for values in smug_only.values()}) == 1
    varnet_seeds = {values["clean_seed"] for k, values in forward.items() if k[2] == "varnet"}
    assert varnet_seeds.isdisjoint(values["clean_seed"] for values in smug_only.values())


def _unit_records(unit: tuple[str, str, str], slices: int = 2) -> list[dict]:
    data, condition, batch = unit
    return [{"data": data, "condition": condition, "batch": batch, "slice": s, "psnr": 30.0 + s} for s in range(slices)]


def test_store_records_each_unit_once(tmp_path):
    store = RecordStore(tmp_path / RECORDS)
    unit = ("default", "main/clean", "0-1")
    store.append_unit(unit, _unit_records(unit))
    with pytest.raises(RecordStoreError, match="already records unit default/main/clean/0-1"):
        store.append_unit(unit, _unit_records(unit))
    assert len(RecordStore(tmp_path / RECORDS).records) == 2

    # A file with a unit twice (two runs wrote into one folder before there was a lock) is refused, not summed.
    text = (tmp_path / RECORDS).read_text()
    (tmp_path / RECORDS).write_text(text + text)
    with pytest.raises(RecordStoreError) as error:
        RecordStore(tmp_path / RECORDS)
    message = str(error.value)
    assert str(tmp_path / RECORDS) in message and "twice (line 6)" in message and "new --output-dir" in message


@pytest.mark.parametrize("tail", ["records", "torn", "no_newline"])
def test_store_drops_the_unit_in_flight_so_a_resumed_unit_counts_once(tmp_path, tail):
    path = tmp_path / RECORDS
    done, in_flight = ("default", "main/clean", "0-1"), ("default", "main/pgd", "0-1")
    RecordStore(path).append_unit(done, _unit_records(done))
    finished = path.read_bytes()
    partial = "".join(json.dumps(r) + "\n" for r in _unit_records(in_flight))
    marker = json.dumps({"type": "done", "data": in_flight[0], "condition": in_flight[1], "batch": in_flight[2]})
    # What a kill leaves: some records of the next unit, a line cut short, or its marker without the newline.
    partial = {"records": partial[:-1].rsplit("\n", 1)[0] + "\n", "torn": partial[:-20], "no_newline": partial + marker}
    path.write_bytes(finished + partial[tail].encode())

    store = RecordStore(path)
    assert store.done == {done} and len(store.records) == 2 and path.read_bytes() == finished
    store.append_unit(in_flight, _unit_records(in_flight))
    reopened = RecordStore(path)
    assert reopened.done == {done, in_flight} and len(reopened.records) == 4


def test_store_refuses_a_line_that_is_no_record(tmp_path):
    (tmp_path / RECORDS).write_text('{"psnr": 1.0}\n{"type": "done"}\n')
    with pytest.raises(RecordStoreError, match=r"line 2: not a record of smug evaluate"):
        RecordStore(tmp_path / RECORDS)


def test_panels_are_stored_with_their_unit(tmp_path):
    store = RecordStore(tmp_path / RECORDS)
    image = np.arange(6.0).reshape(2, 3)
    store.append_unit(("default", "main/clean", "0-1"), [], {"target": image, "clean|smug": image + 1})
    store.append_unit(("default", "main/pgd", "0-1"), [], {"target": image, "pgd|smug": image + 2})
    panels = load_panels(tmp_path)
    assert sorted(panels) == ["clean|smug", "pgd|smug", "target"]
    np.testing.assert_array_equal(panels["pgd|smug"], image + 2)


def test_resume_refuses_records_of_an_earlier_format(tmp_path):
    prepare_output(tmp_path, {"seed": 0}, resume=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "records_format"}))
    with pytest.raises(ValueError, match="earlier smug evaluate whose seeds differ"):
        prepare_output(tmp_path, {"seed": 0}, resume=True)
    prepare_output(tmp_path / "new", {"seed": 0}, resume=False)
    assert (tmp_path / "new" / "manifest.json").exists() and RecordStore(tmp_path / "new" / RECORDS).done == set()


def test_lock_admits_one_run_and_is_released(tmp_path):
    out = tmp_path / "out"
    with output_dir_lock(out) as lock:
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(OutputDirLocked) as error, output_dir_lock(out):
            raise AssertionError("a second run was let into a locked folder")
        message = str(error.value)
        assert str(out) in message and f"pid {os.getpid()} on host {socket.gethostname()}" in message
        assert "another --output-dir" in message and "\n" not in message
        (out / "result.txt").write_text("kept")
    assert not lock.exists() and (out / "result.txt").exists()
    with output_dir_lock(out) as again:  # free again
        assert json.loads(again.read_text())["pid"] == os.getpid()
    # A run that wrote nothing leaves no folder behind.
    with output_dir_lock(tmp_path / "unused") as unused:
        assert unused.exists()
    assert not (tmp_path / "unused").exists()


def test_stale_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    child = subprocess.Popen(["true"])  # a pid of this host that has ended
    child.wait()
    out = tmp_path / "out"
    out.mkdir()
    stale = {"pid": child.pid, "host": socket.gethostname(), "started": "2026-01-01 00:00:00"}
    (out / LOCK).write_text(json.dumps(stale))
    with caplog.at_level("WARNING"), output_dir_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"from pid {child.pid} on host {socket.gethostname()}" in caplog.text
    assert "ended without releasing it" in caplog.text


@pytest.mark.parametrize(
    "owner, message",
    [
        ({"pid": 1, "host": "elsewhere.example"}, "on another host (pid 1 on host elsewhere.example"),
        # An unlocked file naming a process that runs here: a file system whose locks do not work.
        ({"pid": os.getppid(), "host": socket.gethostname()}, f"if pid {os.getppid()} is no smug run"),
    ],
)
def test_lock_whose_owner_may_still_run_is_refused(tmp_path, owner, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({**owner, "started": "2026-01-01 00:00:00"}))
    with pytest.raises(OutputDirLocked) as error, output_dir_lock(out):
        raise AssertionError("a lock whose owner may still run was taken")
    assert message in str(error.value) and f"delete {out / LOCK} and run again" in str(error.value)
    assert json.loads((out / LOCK).read_text())["pid"] == owner["pid"]


def test_a_panel_write_cut_by_a_kill_is_not_read(tmp_path):
    import numpy as np

    from smug_plugin.robustness.run.records import PANELS

    panels = tmp_path / PANELS
    panels.mkdir()
    np.savez(panels / "unit.npz", target=np.ones((2, 2)))
    (panels / ".unit2.npz.abc123.npz").write_bytes(b"")  # what atomic_path leaves when the process dies mid-write
    assert list(load_panels(tmp_path)) == ["target"]
