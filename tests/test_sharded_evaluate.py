"""``smug evaluate`` under torchrun with 2 gloo ranks gives the per-slice records of one process, in the same order;
a rank killed mid-run loses nothing that ``--resume`` does not redo, and the merge has no gaps and no duplicates."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import smug_command
from robustness_fixtures import make_setup

from smug_plugin.cli.main import main
from smug_plugin.robustness.run.output_lock import LOCK
from smug_plugin.robustness.run.records import RANK_RECORDS, RECORDS, rank_record_files

# A randomized plugin model and a deterministic DIRECT model; an attack, noise, a test-time shift (n/a for VarNet)
# and a data shift: units of several costs on two data groups.
PROTOCOL = """
name: sharded
seed: 11
perturbations:
  - {name: clean, kind: clean}
  - {name: noise, kind: gaussian, norm: linf, budget: {value: 0.05, convention: absolute}}
  - {name: pgd, kind: pgd, norm: linf, budget: {value: 0.05, convention: absolute}, steps: 2}
sweeps:
  sigma: {values: [0.1], perturbations: [clean]}
  acceleration: {values: [8], perturbations: [clean]}
"""
SLICES = 3  # batches of one slice: 3 x (3 main + 1 sigma) units on the default data, 3 on the 8x data
UNITS = SLICES * 4 + SLICES
TIMEOUT = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sharded")
    setup = make_setup(root, ("smug", "varnet"))
    (root / "sharded.yaml").write_text(PROTOCOL)
    return {**setup, "protocol": root / "sharded.yaml"}


def _arguments(setup: dict, out: pathlib.Path, *extra: str) -> list[str]:
    models = sum([["--model", spec] for spec in setup["specs"]], [])
    data = ["--data-root", str(setup["data"]), "--output-dir", str(out), "--max-slices", str(SLICES)]
    options = ["--batch-size", "1", "--threads", "1", *extra]
    return ["evaluate", *models, "--protocol", str(setup["protocol"]), *data, *options]


def _torchrun(setup: dict, out: pathlib.Path, *extra: str) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 -m smug_plugin.cli.main evaluate ...`` (stderr is a pipe: no
    terminal, so progress comes as plain lines)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    command = [*launcher, *smug_command(*_arguments(setup, out, *extra))[2:]]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _records(out: pathlib.Path) -> list[dict]:
    """The report's per-slice records in their order, every value but the timing as JSON text (NaN equals NaN)."""
    records = json.loads((out / "robustness.json").read_text())["records"]
    return [{k: json.dumps(v) for k, v in r.items() if k != "seconds"} for r in records]


def _markers(out: pathlib.Path) -> list[tuple]:
    lines = [json.loads(line) for line in (out / RECORDS).read_text().splitlines()]
    return [(m["data"], m["condition"], m["batch"]) for m in lines if m.get("type") == "done"]


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory) -> pathlib.Path:
    """The same evaluation in one process."""
    out = tmp_path_factory.mktemp("single") / "out"
    threads = torch.get_num_threads()
    try:
        assert main(_arguments(setup, out, "--no-progress")) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _rank_process(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the worker of ``rank`` that torchrun started (a child whose environment names the rank)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(pathlib.Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = pathlib.Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environment:
            return int(entry)
    raise AssertionError(f"torchrun (pid {launcher.pid}) has no worker of rank {rank}")


@pytest.mark.e2e
def test_two_ranks_give_the_records_of_one_process_in_its_order(setup, single, tmp_path):
    out = tmp_path / "sharded"
    launcher = _torchrun(setup, out)
    stdout, stderr = launcher.communicate(timeout=TIMEOUT)
    assert launcher.returncode == 0, stderr[-3000:]

    assert _records(out) == _records(single)
    assert len(_records(single)) == (UNITS - SLICES) * 2 + SLICES  # VarNet has no sigma: n/a under that sweep
    # One records.jsonl in the order of one process, each unit once; the ranks' files are merged away.
    assert _markers(out) == _markers(single) and len(set(_markers(out))) == UNITS
    assert rank_record_files(out) == [] and not (out / LOCK).exists()
    assert (out / "panels.png").read_bytes() == (single / "panels.png").read_bytes()
    assert json.loads((out / "robustness.json").read_text())["run"]["world_size"] == 2

    # Both ranks worked (units dealt out by cost) and say how fast; rank 0 alone prints the report's paths.
    throughput = [line for line in stdout.splitlines() if line.startswith("  rank ")]
    assert len(throughput) == 2 and all(" 0 units" not in line for line in throughput), stdout
    assert stdout.count(f"json: {out / 'robustness.json'}") == 1
    # Progress goes to a pipe here: plain lines per rank, no carriage returns.
    assert "\r" not in stderr
    for rank in (0, 1):
        assert f"[rank {rank}/2] robustness: " in stderr and f"[rank {rank}/2] main/pgd: " in stderr


@pytest.mark.e2e
def test_a_killed_rank_loses_nothing_that_resume_does_not_redo(setup, single, tmp_path):
    out = tmp_path / "killed"
    launcher = _torchrun(setup, out, "--no-progress")
    rank1 = out / RANK_RECORDS.format(rank=1)
    deadline = time.monotonic() + TIMEOUT
    while not (rank1.exists() and '"type": "done"' in rank1.read_text()):
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-3000:]
        time.sleep(0.01)
    os.kill(_rank_process(launcher, 1), signal.SIGKILL)
    launcher.communicate(timeout=TIMEOUT)
    assert launcher.returncode != 0  # torchrun stops the other rank and fails
    before = {path.name: path.read_text().count('"type": "done"') for path in rank_record_files(out)}
    assert sum(before.values()) < UNITS and before.get(rank1.name, 0) >= 1

    resumed = _torchrun(setup, out, "--resume", "--no-progress")
    stdout, stderr = resumed.communicate(timeout=TIMEOUT)
    assert resumed.returncode == 0, stderr[-3000:]
    assert _records(out) == _records(single)
    assert _markers(out) == _markers(single) and len(set(_markers(out))) == UNITS
    assert rank_record_files(out) == [] and not (out / LOCK).exists()
    # The resumed run computed exactly the units the killed one had not finished.
    computed = sum(int(line.split(": ")[1].split()[0]) for line in stdout.splitlines() if line.startswith("  rank "))
    assert computed == UNITS - sum(before.values()), stdout
