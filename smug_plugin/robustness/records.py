"""The record store of a run: per-slice records (``records.jsonl``), the run's manifest and the image panels.

Work is done in units of (data, condition, batch). A unit's per-slice records for all models are appended to
``records.jsonl`` in one write followed by a ``done`` marker, so an interrupted run loses at most the unit in flight
and ``--resume`` skips every marked unit; a line torn by an interruption is dropped when the store is opened.
"""

import json
import os
import pathlib
from collections import defaultdict

import numpy as np

from smug_plugin.atomic import atomic_path, atomic_write_text

RECORDS = "records.jsonl"
MANIFEST = "manifest.json"
PANELS = "panels.npz"

Unit = tuple[str, str, str]  # (data, condition id, batch key)


class RecordStore:
    """Append-only JSON-lines store of per-slice records with per-unit completion markers."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.done: set[Unit] = set()
        self.records: list[dict] = []
        if path.exists():
            self._load()

    def _load(self) -> None:
        pending: dict[Unit, list[dict]] = defaultdict(list)
        good_bytes = 0
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by an interruption: everything after it is dropped
                good_bytes += len(line)
                unit = (entry["data"], entry["condition"], entry["batch"])
                if entry.get("type") == "done":
                    self.done.add(unit)
                    self.records += pending.pop(unit, [])
                else:
                    pending[unit].append(entry)
        # Drop the torn tail so later appends start on a clean line.
        with open(self.path, "r+b") as f:
            f.truncate(good_bytes)

    def append_unit(self, unit: Unit, records: list[dict]) -> None:
        """Append a unit's records and its ``done`` marker in one write, flushed to disk."""
        marker = {"type": "done", "data": unit[0], "condition": unit[1], "batch": unit[2]}
        text = "".join(json.dumps(r) + "\n" for r in [*records, marker])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.done.add(unit)
        self.records += records


def open_store(output_dir: pathlib.Path, manifest: dict, resume: bool) -> RecordStore:
    """Create the output directory and its manifest, or check that a resumed run matches the interrupted one.

    Raises
    ------
    FileExistsError
        Results exist and ``resume`` is not set.
    ValueError
        ``resume`` with settings that differ from the interrupted run's.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path, records_path = output_dir / MANIFEST, output_dir / RECORDS
    if records_path.exists() and not resume:
        raise FileExistsError(
            f"{output_dir} already holds results ({RECORDS}); pass --resume to continue, or use a new dir."
        )
    if resume and manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old != manifest:
            changed = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise ValueError(f"Cannot resume in {output_dir}: settings differ from the interrupted run ({changed}).")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return RecordStore(records_path)


def save_panels(path: pathlib.Path, images: dict[str, np.ndarray]) -> None:
    """Store the images of one slice (target, each model under each perturbation) for the panel figure."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **images)
