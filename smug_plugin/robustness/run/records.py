"""The record store of a run: per-slice records (``records.jsonl``), the run's manifest and the image panels.

Work is done in units of (data, condition, batch). A unit's per-slice records for all models are appended to
``records.jsonl`` in one write followed by a ``done`` marker, after its panel images (if any) were saved under
``panels/``; so an interrupted run loses at most the unit in flight, and ``--resume`` skips every marked unit and
still finds every panel. What follows the last marker (a unit in flight, a torn line) is cut off when the store is
opened. A unit is recorded once: the store refuses to append a finished unit and to open a file holding one twice.

Every ``done`` marker names the run that wrote it (``run``: `run_id`, a digest of the run's manifest: protocol
content, seed, models and their settings, data). The identity so lives with the records as well as in
``manifest.json``: a resumed run and the commands that read a folder (``smug bound``, ``smug shifts``) refuse records
of another run even when the manifest was deleted or replaced.

A sharded run (``torchrun``) has one record file per rank, ``records.rank<R>.jsonl``, each written as above by its
rank alone. Rank 0 merges them (`merge_records`) into one ``records.jsonl`` in the order one process writes, checking
that every unit is there once, and removes them; until then, a resumed run of any number of processes skips the
units finished in any of them.
"""

import hashlib
import json
import os
import pathlib

import numpy as np

from smug_plugin.atomic import atomic_path, atomic_write_text

RECORDS = "records.jsonl"
RANK_RECORDS = "records.rank{rank}.jsonl"
MANIFEST = "manifest.json"
PANELS = "panels"
# Bumped when records of the same settings would hold other numbers, so that --resume never mixes the two.
# 2: the clean reconstruction's noise seed names the model, its settings and the batch, not the first condition.
# 3: every record holds the slice's intensity scale s_ref and eps in its units (`intensity_scale`, `eps_paper`).
# 4: records of gradient attacks hold their objective trace and gradient health, every record ||delta|| / ||y||
#    (`delta_rel_l2`), an ensemble's its winner and members; attacks of an ensemble draw member seeds.
# 5: every done marker names its run (`run_id`).
RECORDS_FORMAT = 5

Unit = tuple[str, str, str]  # (data, condition id, batch key)


class RecordStoreError(ValueError):
    """A records file that cannot be continued: a unit recorded twice, or a line that is not a record."""


class RecordStore:
    """Append-only JSON-lines store of per-slice records with per-unit completion markers.

    Parameters
    ----------
    path : pathlib.Path
        The ``records.jsonl`` file (or a rank's); panels go to the ``panels/`` folder beside it.
    read_only : bool
        Read another process's file: what follows its last marker is left as it is, not cut off.
    run : str, optional
        The `run_id` this process writes into its markers.

    Raises
    ------
    RecordStoreError
        The file holds a unit twice (two runs wrote into one folder) or a complete line without the unit's keys.
    """

    def __init__(self, path: pathlib.Path, read_only: bool = False, run: str | None = None):
        self.path = path
        self.run = run
        self.runs: set[str | None] = set()  # the runs the file's markers name (None: a marker naming none)
        self.panels_dir = path.parent / PANELS
        self.done: set[Unit] = set()
        self.records: list[dict] = []
        self.units: dict[Unit, list[dict]] = {}  # the records of each finished unit, in the file's order
        self.read_only = read_only
        if path.exists():
            self._load()

    def _load(self) -> None:
        unit_records: list[dict] = []  # records since the last marker: the unit in flight when the run stopped
        offset = kept = 0  # kept: the bytes up to the end of the last done marker
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, start=1):
                offset += len(line)
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by an interruption: nothing after it was written by a finished unit
                if not line.endswith(b"\n"):
                    break  # cut just before its newline; appending to it would join two lines
                if entry.get("type") != "done":
                    unit_records.append(entry)
                    continue
                unit = self._unit(entry, number)
                if unit in self.done:
                    raise RecordStoreError(
                        f"{self.path} records unit {'/'.join(unit)} twice (line {number}): two runs wrote into this "
                        "folder at once, so its numbers cannot be trusted; evaluate again into a new --output-dir."
                    )
                if any(self._unit(r, number) != unit for r in unit_records):
                    raise RecordStoreError(
                        f"{self.path}: records before line {number} belong to another unit than its done marker "
                        "(two runs wrote into this folder at once); evaluate again into a new --output-dir."
                    )
                self._add(unit, unit_records)
                self.runs.add(entry.get("run"))
                unit_records, kept = [], offset
        if kept < offset and not self.read_only:
            # Drop the unit in flight, so that its redone records are not counted twice, and start on a clean line.
            with open(self.path, "r+b") as f:
                f.truncate(kept)

    def _unit(self, entry: dict, number: int) -> Unit:
        try:
            return (entry["data"], entry["condition"], entry["batch"])
        except (KeyError, TypeError):
            raise RecordStoreError(
                f"{self.path}, line {number}: not a record of smug evaluate (no data/condition/batch); "
                "evaluate into a new --output-dir."
            ) from None

    def append_unit(self, unit: Unit, records: list[dict], panels: dict[str, np.ndarray] | None = None) -> None:
        """Save the unit's panel images, then append its records and its ``done`` marker in one write, flushed.

        Raises
        ------
        RecordStoreError
            The unit is already recorded.
        """
        if self.read_only:
            raise RecordStoreError(f"{self.path} was opened to be read, not to be appended to.")
        if unit in self.done:
            raise RecordStoreError(f"{self.path} already records unit {'/'.join(unit)}; a unit is recorded once.")
        if panels:
            self.panels_dir.mkdir(exist_ok=True)
            with atomic_path(self.panels_dir / panel_file_name(unit), suffix=".npz") as tmp:
                np.savez(tmp, **panels)
        text = unit_text(unit, records, self.run)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self._add(unit, records)

    def _add(self, unit: Unit, records: list[dict]) -> None:
        self.done.add(unit)
        self.units[unit] = records
        self.records += records


def panel_file_name(unit: Unit) -> str:
    """File of a unit's panels (condition ids hold characters that file names should not)."""
    return hashlib.sha256(json.dumps(unit).encode()).hexdigest()[:20] + ".npz"


def load_panels(output_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """The panel images of every recorded unit: ``target`` and ``<perturbation>|<model>``."""
    images: dict[str, np.ndarray] = {}
    for path in sorted((output_dir / PANELS).glob("*.npz")):
        if path.name.startswith("."):
            continue  # the temporary file of a write a killed run left unfinished (atomic_path): never a unit's
        with np.load(path) as data:
            images.update({key: data[key] for key in data.files})
    return images


def run_id(manifest: dict) -> str:
    """The identity of a run: a digest of its manifest (``records_format`` included)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def unit_text(unit: Unit, records: list[dict], run: str | None = None) -> str:
    """The lines of one unit in a record file: its records, then its ``done`` marker (naming ``run``)."""
    marker = {"type": "done", "data": unit[0], "condition": unit[1], "batch": unit[2], "run": run}
    return "".join(json.dumps(r) + "\n" for r in [*records, marker])


def record_path(output_dir: pathlib.Path, rank: int, world_size: int) -> pathlib.Path:
    """The record file a process appends to: ``records.jsonl`` alone, ``records.rank<R>.jsonl`` as one of a
    sharded run's ranks."""
    return output_dir / (RECORDS if world_size == 1 else RANK_RECORDS.format(rank=rank))


def rank_record_files(output_dir: pathlib.Path) -> list[pathlib.Path]:
    """The ranks' record files of a sharded run not merged yet, by rank."""
    pattern = RANK_RECORDS.format(rank="*")
    prefix, suffix = pattern.split("*")
    files = [p for p in output_dir.glob(pattern) if p.name[len(prefix) : -len(suffix)].isdigit()]
    return sorted(files, key=lambda p: int(p.name[len(prefix) : -len(suffix)]))


def recorded_runs(output_dir: pathlib.Path) -> set[str | None]:
    """The runs the markers of the folder's record files name (None: markers of an earlier format, naming none)."""
    files = [output_dir / RECORDS] if (output_dir / RECORDS).exists() else []
    return {run for path in [*files, *rank_record_files(output_dir)] for run in RecordStore(path, read_only=True).runs}


def recorded_units(output_dir: pathlib.Path) -> dict[Unit, list[dict]]:
    """Every finished unit in the folder's record files (``records.jsonl`` and the ranks'), with its records.

    A unit may be in two files only with the same records: a merge that was stopped after it wrote
    ``records.jsonl`` and before it removed the ranks' files.

    Raises
    ------
    RecordStoreError
        A file cannot be read as records, or two files hold one unit with different records.
    """
    units: dict[Unit, list[dict]] = {}
    files = [output_dir / RECORDS] if (output_dir / RECORDS).exists() else []
    for path in [*files, *rank_record_files(output_dir)]:
        for unit, records in RecordStore(path, read_only=True).units.items():
            if unit in units and unit_text(unit, units[unit]) != unit_text(unit, records):
                raise RecordStoreError(
                    f"{path} and another record file in {output_dir} both record unit {'/'.join(unit)}, with other "
                    "values: two runs wrote into this folder at once; evaluate again into a new --output-dir."
                )
            units[unit] = records
    return units


def merge_records(output_dir: pathlib.Path, order: list[Unit], run: str | None = None) -> list[dict]:
    """The records of the units of ``order`` from every record file of the folder, in that order; where ranks' files
    exist, they are merged into one ``records.jsonl`` in that order (written atomically, its markers naming ``run``;
    then they are removed).

    Raises
    ------
    RecordStoreError
        A unit of ``order`` is missing (a gap), or the files record units the run does not have, or cannot be read
        (see `recorded_units`).
    """
    units = recorded_units(output_dir)
    missing = [unit for unit in order if unit not in units]
    if missing:
        raise RecordStoreError(
            f"{len(missing)} of {len(order)} units are in no record file of {output_dir} (first: "
            f"{'/'.join(missing[0])}): every rank must write into the same folder (a file system all nodes share); "
            "run again with --resume to compute them."
        )
    extra = sorted(set(units) - set(order))
    if extra:
        raise RecordStoreError(
            f"{output_dir} records {len(extra)} units this run does not have (first: {'/'.join(extra[0])}); "
            "evaluate again into a new --output-dir."
        )
    rank_files = rank_record_files(output_dir)
    if rank_files:
        atomic_write_text(output_dir / RECORDS, "".join(unit_text(unit, units[unit], run) for unit in order))
        for path in rank_files:
            path.unlink()
    return [record for unit in order for record in units[unit]]


def prepare_output(output_dir: pathlib.Path, manifest: dict, resume: bool) -> str:
    """Create the output directory and its manifest, or check that a resumed run matches the interrupted one: its
    manifest, if still there, and the run its records' markers name, in any case. Returns the run's `run_id`.

    Raises
    ------
    FileExistsError
        Results exist and ``resume`` is not set.
    ValueError
        ``resume`` with settings that differ from the interrupted run's, or records of another format or run.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = {**manifest, "records_format": RECORDS_FORMAT}
    manifest_path = output_dir / MANIFEST
    existing = [p.name for p in [output_dir / RECORDS, *rank_record_files(output_dir)] if p.exists()]
    if existing and not resume:
        raise FileExistsError(
            f"{output_dir} already holds results ({', '.join(existing)}); pass --resume to continue, or use a new dir."
        )
    if resume and manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("records_format") != RECORDS_FORMAT:
            raise ValueError(
                f"Cannot resume in {output_dir}: its records were written by an earlier smug evaluate whose seeds "
                f"differ or whose records lack fields of this one (records format {old.get('records_format', 1)}, "
                f"now {RECORDS_FORMAT}); evaluate again into a new --output-dir."
            )
        if old != manifest:
            changed = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise ValueError(f"Cannot resume in {output_dir}: settings differ from the interrupted run ({changed}).")
    run = run_id(manifest)
    others = recorded_runs(output_dir) - {run} if resume else set()
    if others:
        which = (
            "an earlier smug evaluate, whose markers name no run"
            if None in others
            else f"run {sorted(others)[0]}, not this one ({run})"
        )
        raise ValueError(
            f"Cannot resume in {output_dir}: its records were written by {which}: protocol, seed, models or data "
            "differ from the interrupted run's; resume with the same options, or evaluate into a new --output-dir."
        )
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return run
