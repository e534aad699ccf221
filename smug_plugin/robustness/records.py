"""The record store of a run: per-slice records (``records.jsonl``), the run's manifest and the image panels.

Work is done in units of (data, condition, batch). A unit's per-slice records for all models are appended to
``records.jsonl`` in one write followed by a ``done`` marker, after its panel images (if any) were saved under
``panels/``; so an interrupted run loses at most the unit in flight, and ``--resume`` skips every marked unit and
still finds every panel. What follows the last marker (a unit in flight, a torn line) is cut off when the store is
opened. A unit is recorded once: the store refuses to append a finished unit and to open a file holding one twice.
"""

import hashlib
import json
import os
import pathlib

import numpy as np

from smug_plugin.atomic import atomic_path, atomic_write_text

RECORDS = "records.jsonl"
MANIFEST = "manifest.json"
PANELS = "panels"
# Bumped when records of the same settings would hold other numbers, so that --resume never mixes the two.
# 2: the clean reconstruction's noise seed names the model, its settings and the batch, not the first condition.
# 3: every record holds the slice's intensity scale s_ref and eps in its units (`intensity_scale`, `eps_paper`).
# 4: records of gradient attacks hold their objective trace and gradient health, every record ||delta|| / ||y||
#    (`delta_rel_l2`), an ensemble's its winner and members; attacks of an ensemble draw member seeds.
RECORDS_FORMAT = 4

Unit = tuple[str, str, str]  # (data, condition id, batch key)


class RecordStoreError(ValueError):
    """A records file that cannot be continued: a unit recorded twice, or a line that is not a record."""


class RecordStore:
    """Append-only JSON-lines store of per-slice records with per-unit completion markers.

    Parameters
    ----------
    path : pathlib.Path
        The ``records.jsonl`` file; panels go to the ``panels/`` folder beside it.

    Raises
    ------
    RecordStoreError
        The file holds a unit twice (two runs wrote into one folder) or a complete line without the unit's keys.
    """

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.panels_dir = path.parent / PANELS
        self.done: set[Unit] = set()
        self.records: list[dict] = []
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
                self.done.add(unit)
                self.records += unit_records
                unit_records, kept = [], offset
        if kept < offset:
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
        if unit in self.done:
            raise RecordStoreError(f"{self.path} already records unit {'/'.join(unit)}; a unit is recorded once.")
        if panels:
            self.panels_dir.mkdir(exist_ok=True)
            with atomic_path(self.panels_dir / panel_file_name(unit), suffix=".npz") as tmp:
                np.savez(tmp, **panels)
        marker = {"type": "done", "data": unit[0], "condition": unit[1], "batch": unit[2]}
        text = "".join(json.dumps(r) + "\n" for r in [*records, marker])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.done.add(unit)
        self.records += records


def panel_file_name(unit: Unit) -> str:
    """File of a unit's panels (condition ids hold characters that file names should not)."""
    return hashlib.sha256(json.dumps(unit).encode()).hexdigest()[:20] + ".npz"


def load_panels(output_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """The panel images of every recorded unit: ``target`` and ``<perturbation>|<model>``."""
    images: dict[str, np.ndarray] = {}
    for path in sorted((output_dir / PANELS).glob("*.npz")):
        with np.load(path) as data:
            images.update({key: data[key] for key in data.files})
    return images


def open_store(output_dir: pathlib.Path, manifest: dict, resume: bool) -> RecordStore:
    """Create the output directory and its manifest, or check that a resumed run matches the interrupted one.

    Raises
    ------
    FileExistsError
        Results exist and ``resume`` is not set.
    ValueError
        ``resume`` with settings that differ from the interrupted run's, or records of another format.
    RecordStoreError
        The records file cannot be continued (see `RecordStore`).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = {**manifest, "records_format": RECORDS_FORMAT}
    manifest_path, records_path = output_dir / MANIFEST, output_dir / RECORDS
    if records_path.exists() and not resume:
        raise FileExistsError(
            f"{output_dir} already holds results ({RECORDS}); pass --resume to continue, or use a new dir."
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
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return RecordStore(records_path)
