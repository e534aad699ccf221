"""The parts of a sharded evaluation on their own: the ranks torchrun sets, the expected cost of a unit and the share
of each rank, the merge of the ranks' record files, and progress that reads well on a terminal and in a log file."""

import dataclasses
import io
import itertools
import json
from types import SimpleNamespace

import pytest
import torch
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.smug import SMUG
from smug_plugin.robustness.reconstructors.interface import PluginReconstructor, TestTimeSettings
from smug_plugin.robustness.run.distributed import Ranks
from smug_plugin.robustness.run.progress import INTERVAL_S, Progress
from smug_plugin.robustness.run.protocol import Condition, PerturbationSpec
from smug_plugin.robustness.run.records import (
    RANK_RECORDS,
    RECORDS,
    RecordStore,
    RecordStoreError,
    merge_records,
    prepare_output,
    rank_record_files,
    recorded_units,
)
from smug_plugin.robustness.run.sharding import assign, share, unit_cost


def test_ranks_come_from_torchrun_and_one_process_without_it():
    assert Ranks.from_environment({}) == Ranks() and not Ranks().sharded
    environment = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}
    ranks = Ranks.from_environment(environment)
    assert ranks == Ranks(rank=3, world_size=4, local_rank=1, local_world_size=2, node_rank=1)
    assert ranks.sharded and ranks.label == "rank 3/4"
    assert ranks.device("cuda") == "cuda:1" and ranks.device("cpu") == "cpu" and ranks.device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match=r"RANK=None: torchrun sets WORLD_SIZE, RANK, LOCAL_RANK"):
        Ranks.from_environment({"WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="rank 2 of a world of 2"):
        Ranks.from_environment({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def test_units_go_most_expensive_first_to_the_least_loaded_rank():
    costs = [1.0, 7.0, 1.0, 3.0, 3.0, 1.0, 1.0, 1.0]
    ranks = assign(costs, 2)
    loads = [sum(c for c, r in zip(costs, ranks) if r == rank) for rank in (0, 1)]
    assert ranks[1] == 0 and loads == [9.0, 9.0]  # the 7 alone, then the rest fills up the other rank first
    assert assign(costs, 2) == ranks  # deterministic: every rank computes the same share
    assert assign(costs, 1) == [0] * len(costs)
    # Round-robin would give one rank both expensive units: [8, 2] instead of [5, 5].
    assert sorted(sum(c for c, r in zip([4, 4, 1, 1], assign([4, 4, 1, 1], 2)) if r == k) for k in (0, 1)) == [5, 5]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_the_shares_cover_every_unfinished_unit_once(world_size):
    costs = [float(c) for c in (5, 1, 1, 2, 8, 1, 3)]
    finished = [False, True, False, False, True, False, False]
    shares = [share(costs, finished, rank, world_size) for rank in range(world_size)]
    assert sorted(itertools.chain(*shares)) == [i for i, done in enumerate(finished) if not done]
    assert all(s == sorted(s) for s in shares)  # each rank works in the plan's order


def _pgd(**settings) -> PerturbationSpec:
    entry = {"name": "pgd", "kind": "pgd", "budget": {"value": 0.05, "convention": "absolute"}, **settings}
    return PerturbationSpec.from_entry(entry)


def test_unit_cost_counts_attack_passes_and_each_models_work():
    models = {"a": SimpleNamespace(relative_work=lambda s: 1.0), "b": SimpleNamespace(relative_work=lambda s: 2.0)}
    clean = Condition("main", PerturbationSpec.from_entry({"name": "clean", "kind": "clean"}))
    assert unit_cost(clean, models) == 3.0  # one reconstruction per model
    # 10 steps of a forward and a backward pass with 4 draws, the final iterate scored per draw, the reconstruction.
    eot = Condition("main", _pgd(steps=10, eot_samples=4))
    assert unit_cost(eot, models) == 3 * (1 + 3 * 10 * 4 + 4)
    # A transferred attack runs once, on its source.
    transfer = Condition("main", dataclasses.replace(_pgd(steps=10), transfer_from="b"))
    assert unit_cost(transfer, models) == 2 * 31 + 3


def test_a_plugin_models_work_grows_with_unrolls_and_draws():
    network = SMUG(fft2, ifft2, num_steps=4, sigma=0.1, num_samples=2, denoiser_hidden_channels=4)
    model = PluginReconstructor("smug", None, SimpleNamespace(model=network))
    assert model.relative_work(TestTimeSettings()) == 1.0
    assert model.relative_work(TestTimeSettings(num_steps=8, num_samples=10)) == 10.0
    assert model.relative_work(TestTimeSettings(sigma=0.0)) == 0.5  # no noise: one draw, not two
    assert network.num_steps == 4 and network.num_samples == 2  # settings restored


def _unit_records(unit: tuple, values: float = 30.0) -> list[dict]:
    data, condition, batch = unit
    return [{"data": data, "condition": condition, "batch": batch, "slice": s, "psnr": values + s} for s in range(2)]


UNITS = [("default", f"main/{c}", b) for b in ("0-0", "1-1") for c in ("clean", "pgd")]


def _write_ranks(out, assignment: dict[int, list[int]]) -> None:
    for rank, indices in assignment.items():
        store = RecordStore(out / RANK_RECORDS.format(rank=rank))
        for i in indices:
            store.append_unit(UNITS[i], _unit_records(UNITS[i]))


def test_merge_writes_one_file_in_the_plans_order_and_removes_the_ranks_files(tmp_path):
    (tmp_path / "single").mkdir()
    single = RecordStore(tmp_path / "single" / RECORDS)
    for unit in UNITS:
        single.append_unit(unit, _unit_records(unit))
    out = tmp_path / "sharded"
    out.mkdir()
    _write_ranks(out, {0: [3, 0], 1: [2, 1]})
    with pytest.raises(FileExistsError, match=r"records\.rank0\.jsonl, records\.rank1\.jsonl\); pass --resume"):
        prepare_output(out, {}, resume=False)
    assert [p.name for p in rank_record_files(out)] == ["records.rank0.jsonl", "records.rank1.jsonl"]

    records = merge_records(out, UNITS)
    assert records == single.records
    assert (out / RECORDS).read_bytes() == single.path.read_bytes()
    assert rank_record_files(out) == []
    assert merge_records(out, UNITS) == records  # a merged folder reads the same


def test_merge_refuses_gaps_and_units_recorded_twice_with_other_values(tmp_path):
    _write_ranks(tmp_path, {0: [0, 1], 1: [2]})
    gap = r"1 of 4 units are in no record file .* \(first: default/main/pgd/1-1\)"
    with pytest.raises(RecordStoreError, match=gap):
        merge_records(tmp_path, UNITS)
    assert len(rank_record_files(tmp_path)) == 2  # nothing merged, nothing removed

    # A merge stopped before it removed the ranks' files: the copies agree, each unit counts once.
    RecordStore(tmp_path / RANK_RECORDS.format(rank=1)).append_unit(UNITS[3], _unit_records(UNITS[3]))
    text = (tmp_path / RANK_RECORDS.format(rank=0)).read_text()
    (tmp_path / RECORDS).write_text(text)
    assert list(recorded_units(tmp_path)) == [UNITS[0], UNITS[1], UNITS[2], UNITS[3]]

    # Two copies with other values: two runs wrote into the folder.
    RecordStore(tmp_path / RANK_RECORDS.format(rank=2)).append_unit(UNITS[0], _unit_records(UNITS[0], 20.0))
    with pytest.raises(RecordStoreError, match=r"records\.rank2\.jsonl and another record file .* default/main/clean"):
        merge_records(tmp_path, UNITS)


def test_a_rank_reads_another_ranks_file_without_cutting_its_unit_in_flight(tmp_path):
    path = tmp_path / RANK_RECORDS.format(rank=1)
    RecordStore(path).append_unit(UNITS[0], _unit_records(UNITS[0]))
    in_flight = path.read_text() + json.dumps(_unit_records(UNITS[1])[0]) + "\n"
    path.write_text(in_flight)
    assert list(recorded_units(tmp_path)) == [UNITS[0]]
    assert path.read_text() == in_flight  # its writer cuts it when it opens the file, nobody else
    with pytest.raises(RecordStoreError, match="opened to be read"):
        RecordStore(path, read_only=True).append_unit(UNITS[1], [])


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _finish(progress: Progress, conditions: list[str]) -> None:
    for condition in conditions:
        progress.unit_started(condition)
        progress.unit_finished(condition, [{"model": "smug", "psnr": 30.0}, {"model": "varnet", "psnr": 28.0}])


def test_progress_in_a_log_file_is_plain_lines_at_a_bounded_rate(monkeypatch):
    log = io.StringIO()
    conditions = ["main/clean", "main/pgd"] * 100
    progress = Progress(
        {"main/clean": 100, "main/pgd": 100}, finished_before=50, label="rank 1/2", stream=log, heartbeat_s=None
    )
    _finish(progress, conditions[:-1])
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    # One line per 10 % of the units (from 20 %, the resumed run had 20 % done), the summary of the finished condition.
    assert len(lines) == 8 and lines[0].startswith("[rank 1/2] robustness: 75/250 units (30%), ")
    summary = "[rank 1/2] main/clean: 100 units in 0:00, mean PSNR smug 30.00 dB, varnet 28.00 dB (100 slices each)"
    assert summary in lines
    # After INTERVAL_S without a line, the next unit prints one, whatever its percentage.
    clock = progress._last_line
    monkeypatch.setattr("smug_plugin.robustness.run.progress.time.monotonic", lambda: clock + INTERVAL_S + 1)
    _finish(progress, conditions[-1:])
    last = log.getvalue().splitlines()[len(lines) :]
    assert last[0].startswith("[rank 1/2] robustness: 250/250 units (100%)") and "left, last main/pgd" in last[0]
    assert last[1].startswith("[rank 1/2] main/pgd: 100 units")


def test_progress_on_a_terminal_is_one_bar_with_rate_and_eta():
    terminal = Terminal()
    progress = Progress({"main/clean": 2}, finished_before=2, stream=terminal, heartbeat_s=None)
    _finish(progress, ["main/clean"] * 2)
    progress.close()
    text = terminal.getvalue()
    assert "\r" in text and "4/4" in text and "unit/s" in text and "main/clean: 2 units in" in text
    silent = io.StringIO()
    _finish(Progress({"main/clean": 2}, enabled=False, stream=silent, heartbeat_s=None), ["main/clean"] * 2)
    assert silent.getvalue() == ""


def test_a_long_unit_says_what_it_computes_and_the_time_left_weighs_the_units(monkeypatch):
    import time

    from smug_plugin.robustness.activity import ACTIVITY

    log = io.StringIO()
    progress = Progress({"main/pgd": 2}, stream=log, heartbeat_s=0.15)
    progress.unit_started("main/pgd", "0-3")
    ACTIVITY.model = "SMUG s0"
    ACTIVITY.attack_step(3, 10)
    time.sleep(0.6)
    progress.close()
    assert "working on main/pgd: model SMUG s0, slices 0-3, attack step 3/10" in log.getvalue()
    # 10 cheap units done of 10 cheap and 10 costing 100 each: the time left is that of 1000 cost units, not 10 units.
    progress = Progress({"main/clean": 10, "main/pgd": 10}, cost_per_condition={"main/pgd": 100.0}, heartbeat_s=None)
    clock = progress.started
    monkeypatch.setattr("smug_plugin.robustness.run.progress.time.monotonic", lambda: clock + 10.0)
    for _ in range(10):
        progress.unit_started("main/clean")
        progress.unit_finished("main/clean", [])
    assert "60 units/min, 16:40 left" in progress.status("main/clean")  # 1000 cost at 1 per second


def test_direct_finds_the_node_group_the_evaluation_gives_it(tmp_path):
    import torch.distributed as dist
    from direct.utils import communication

    from smug_plugin import direct_adapter

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        direct_adapter.set_local_process_group(dist.new_group([0]))
        assert communication.get_local_rank() == 0
    finally:
        direct_adapter.set_local_process_group(None)
        dist.destroy_process_group()
    assert communication._LOCAL_PROCESS_GROUP is None and torch.distributed.is_initialized() is False
