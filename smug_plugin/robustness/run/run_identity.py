"""The identity of a ``smug evaluate`` run, and the check of an evaluation folder that another command reads.

A run is its protocol (content, not name), seed, models (files and the settings that change what they compute) and
data (file names and sizes); `evaluation_manifest` writes it to ``manifest.json``, and its digest (`records.run_id`)
is in every ``done`` marker of the records. ``smug bound`` and ``smug shifts`` read a folder only through
`read_evaluation`, which refuses a run that did not finish, records of another run, and records without an identity.
"""

import hashlib
import json
import pathlib
from dataclasses import dataclass

from smug_plugin.robustness.run.records import MANIFEST, RECORDS, RecordStore, rank_record_files, run_id

REPORT = "robustness.json"
# Keys of `describe()` that say where a model came from, not what it computes.
_WHERE = ("name", "config", "checkpoint")


def _digest(path: str | pathlib.Path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def model_identity(model) -> dict:
    """What makes a loaded model the same model: its files' digests, its description and, for a DIRECT model,
    the settings of its YAML's model section that change its output without changing its weights."""
    from omegaconf import OmegaConf

    from smug_plugin.robustness.reconstructors.direct_engines import COMPARED_WITH_TRAINING

    described = {k: v for k, v in model.describe().items() if k not in _WHERE}
    cfg = getattr(model, "cfg", None)
    settings = {}
    if cfg is not None:
        section = OmegaConf.to_container(cfg.model, resolve=True)
        settings = {k: section[k] for k in COMPARED_WITH_TRAINING if k in section}
    return {
        "name": model.name,
        "config_sha": _digest(model.provenance["config"]),
        "ckpt_sha": _digest(model.provenance["checkpoint"]) if "checkpoint" in model.provenance else None,  # CS
        "described": json.loads(json.dumps(described, default=str)),
        "settings": settings,
    }


def data_identity(data_root: pathlib.Path) -> list[list]:
    """The h5 files of a data root as ``[name, size]`` (cheap; a changed file almost always changes its size)."""
    return [[p.name, p.stat().st_size] for p in sorted(pathlib.Path(data_root).glob("*.h5"))]


def evaluation_manifest(models: list, protocol, settings) -> dict:
    """What a resumed run must share with the interrupted one, and what downstream commands compare."""
    return {
        "protocol": protocol.to_dict(),
        "models": [model_identity(m) for m in models],
        "data_root": str(settings.data_root),
        "data_files": data_identity(settings.data_root),
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "max_slices": settings.max_slices,
    }


@dataclass(frozen=True)
class Evaluation:
    """A finished ``smug evaluate`` folder: its manifest and its records."""

    folder: pathlib.Path
    manifest: dict
    records: list[dict]

    def perturbation(self, name: str) -> dict | None:
        """The protocol's entry of the perturbation ``name`` (as the manifest holds it)."""
        return next((p for p in self.manifest["protocol"]["perturbations"] if p.get("name") == name), None)

    def model(self, name: str) -> dict | None:
        """The identity (`model_identity`) of the model ``name`` in this run."""
        return next((m for m in self.manifest["models"] if m.get("name") == name), None)


def read_evaluation(folder: pathlib.Path, option: str) -> Evaluation:
    """The manifest and records of a finished ``smug evaluate`` run in ``folder`` (given as ``option``).

    Raises
    ------
    ValueError
        Not an evaluation folder, a run that did not finish (killed, running, or a sharded run not merged), a
        manifest that does not match the records, or records of an earlier format.
    """
    where = f"{option} {folder}"
    fix = "give the --output-dir of a finished smug evaluate run"
    if not pathlib.Path(folder).is_dir():
        raise ValueError(f"{where} is not a folder: {fix}.")
    if not (folder / RECORDS).is_file():
        raise ValueError(f"{where} holds no {RECORDS}: {fix}.")
    unfinished = "did not finish (killed, or still running): complete it with smug evaluate --resume first"
    if rank_record_files(folder):
        raise ValueError(f"{where}: the sharded run {unfinished}.")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        report = json.loads((folder / REPORT).read_text())
    except FileNotFoundError as e:
        raise ValueError(f"{where} has no {pathlib.Path(e.filename).name}: the run {unfinished}.") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: its {MANIFEST} or {REPORT} cannot be read ({e}): {fix}.") from None
    if not isinstance(report, dict) or not (report.get("run") or {}).get("complete"):
        raise ValueError(f"{where}: the run {unfinished}.")
    store = RecordStore(folder / RECORDS, read_only=True)
    if not isinstance(manifest, dict) or store.runs != {run_id(manifest)}:
        earlier = None in store.runs
        why = "were written by an earlier smug evaluate (no run identity)" if earlier else "belong to another run"
        raise ValueError(f"{where}: its records {why} than its {MANIFEST} describes: evaluate again into a new folder.")
    return Evaluation(pathlib.Path(folder), manifest, store.records)
