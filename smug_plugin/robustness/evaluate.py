"""The evaluation loop: every data batch x every condition (perturbation under test-time settings) x every model.

Work is done in units of (condition, batch). A unit's per-slice records for all models are appended to
``records.jsonl`` in one write followed by a ``done`` marker, so an interrupted run loses at most the unit in flight
and ``--resume`` skips every marked unit. Seeds are derived from (run seed, condition, batch), never from the order
of work, so a resumed run gives the same numbers as an uninterrupted one.
"""

import hashlib
import json
import logging
import os
import pathlib
import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from smug_plugin.robustness.budgets import NormType
from smug_plugin.robustness.loading import LoadedModel, build_dataset, iterate_batches, load_batch
from smug_plugin.robustness.metrics import robustness_errors, slice_metrics
from smug_plugin.robustness.perturbations import (
    AttackDomain,
    AttackTarget,
    ImageToKspace,
    PGDSettings,
    gaussian_matched,
    pgd,
)
from smug_plugin.robustness.protocol import Condition, PerturbationKind, PerturbationSpec, Protocol

logger = logging.getLogger(__name__)

RECORDS = "records.jsonl"
MANIFEST = "manifest.json"


@dataclass
class RunSettings:
    data_root: pathlib.Path
    output_dir: pathlib.Path
    reference: str | None = None
    seed: int | None = None  # None: the protocol's seed
    resume: bool = False
    max_slices: int | None = None
    device: str = "cpu"
    batch_size: int = 4
    progress: bool = True


class RecordStore:
    """Append-only JSON-lines store of per-slice records with per-unit completion markers."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.done: set[tuple[str, str, str]] = set()
        self.records: list[dict] = []
        if path.exists():
            self._load()

    def _load(self) -> None:
        pending: dict[tuple, list[dict]] = defaultdict(list)
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

    def append_unit(self, unit: tuple[str, str, str], records: list[dict]) -> None:
        marker = {"type": "done", "data": unit[0], "condition": unit[1], "batch": unit[2]}
        text = "".join(json.dumps(r) + "\n" for r in [*records, marker])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.done.add(unit)
        self.records += records


def _manifest(models: list[LoadedModel], protocol: Protocol, settings: RunSettings) -> dict:
    def digest(p: pathlib.Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]

    return {
        "protocol": protocol.to_dict(),
        "models": [
            {"name": m.name, "config_sha": digest(m.spec.config), "ckpt_sha": digest(m.spec.checkpoint)} for m in models
        ],
        "data_root": str(settings.data_root),
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "max_slices": settings.max_slices,
    }


def prepare_output(models: list[LoadedModel], protocol: Protocol, settings: RunSettings) -> RecordStore:
    """Create the output directory, or check that a resumed run matches the interrupted one."""
    from smug_plugin.robustness.report import atomic_write_text

    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(models, protocol, settings)
    manifest_path, records_path = out / MANIFEST, out / RECORDS
    if records_path.exists() and not settings.resume:
        raise FileExistsError(f"{out} already holds results ({RECORDS}); pass --resume to continue, or use a new dir.")
    if settings.resume and manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old != manifest:
            changed = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise ValueError(f"Cannot resume in {out}: settings differ from the interrupted run ({changed}).")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return RecordStore(records_path)


class Evaluator:
    """Runs the conditions of a protocol on loaded models and writes records as they are computed."""

    def __init__(self, models: list[LoadedModel], protocol: Protocol, settings: RunSettings):
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"Model names must be unique, got {names}.")
        protocol = protocol.for_models(names)
        self.models = {m.name: m for m in models}
        self.protocol = protocol
        self.settings = settings
        self.reference = settings.reference or names[0]
        if self.reference not in self.models:
            raise ValueError(f"Reference model '{self.reference}' is not among the models {names}.")
        for p in protocol.perturbations:
            if p.transfer_from is not None and p.transfer_from not in self.models:
                raise ValueError(f"Perturbation '{p.name}' transfers from unknown model '{p.transfer_from}'.")
        # Data come from one model's YAML (the reference) so every model sees identical batches.
        self.data_model = self.models[self.reference]
        self.timings: dict[str, float] = defaultdict(float)
        # First slice of the first batch, per perturbation and model, for the image panels.
        self.panels: dict[str, object] = {}
        self.first_batch: str | None = None

    def run(self, store: RecordStore, on_progress=None) -> None:
        from tqdm import tqdm

        groups: dict[tuple, list[Condition]] = defaultdict(list)
        for c in self.protocol.conditions():
            groups[c.data_key].append(c)
        for data_key, conditions in groups.items():
            data_id = "default" if data_key[0] is None else f"acc={data_key[0]:g}"
            dataset = build_dataset(self.data_model, self.settings.data_root, *data_key)
            for model in self.models.values():
                model.engine.ndim = dataset.ndim  # DIRECT engines learn the dimensionality from the data
            batches = list(
                iterate_batches(self.data_model, dataset, self.settings.batch_size, self.settings.max_slices)
            )
            if data_key == (None, None) and batches:
                self.first_batch = batches[0][0]
            bar = tqdm(batches, desc=f"robustness [{data_id}]", unit="batch", disable=not self.settings.progress)
            for batch_key, indices in bar:
                todo = [c for c in conditions if (data_id, c.id, batch_key) not in store.done]
                if not todo:
                    continue
                t0 = time.perf_counter()
                batch = load_batch(dataset, indices, self.settings.device)
                self.timings["data_s"] += time.perf_counter() - t0
                clean_cache: dict[tuple, torch.Tensor] = {}
                for condition in todo:
                    bar.set_postfix_str(condition.id)
                    records = self.evaluate_unit(condition, batch, batch_key, clean_cache)
                    for r in records:
                        r["data"] = data_id
                    store.append_unit((data_id, condition.id, batch_key), records)
            if self.panels:
                from smug_plugin.robustness.figures import PANELS, save_panels

                save_panels(self.settings.output_dir / PANELS, self.panels)
            if on_progress is not None:
                on_progress()

    def _clean(self, model: LoadedModel, condition: Condition, batch: dict, seed: int, cache: dict) -> torch.Tensor:
        key = (model.name, condition.num_steps, condition.sigma, condition.num_samples)
        if key not in cache:
            with torch.no_grad():
                cache[key] = model.reconstruct(batch, None, noise_seed=seed)
        return cache[key]

    def perturbation_for(
        self, model: LoadedModel, spec: PerturbationSpec, batch: dict, seed: int, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """k-space perturbation of `spec` for `model` on `batch`, and facts about it (eps, attack objective)."""
        kspace, mask = batch["masked_kspace"], batch["sampling_mask"]
        if spec.kind == PerturbationKind.CLEAN:
            return torch.zeros_like(kspace), {"eps": 0.0}
        generator = torch.Generator(device=kspace.device).manual_seed(seed)
        if spec.domain == AttackDomain.IMAGE:
            sens = model.engine.compute_sensitivity_map(batch["sensitivity_map"]).detach()
            lift = ImageToKspace(sens, mask, model.engine.forward_operator)
            signal = lift.adjoint_of(kspace, model.engine.backward_operator)
            support = torch.ones_like(signal[..., :1])
        else:
            lift, signal, support = None, kspace, mask
        eps = spec.budget.resolve(signal, support)
        facts = {"eps": eps.tolist()}
        if spec.kind == PerturbationKind.GAUSSIAN:
            var = gaussian_matched(signal.shape, eps, spec.budget.norm, support, generator)
            return (lift(var) if lift else var), facts

        def objective(delta: torch.Tensor, draw: int) -> torch.Tensor:
            out = model.reconstruct(batch, delta, noise_seed=seed + 1 + draw)
            if out.shape != target.shape:  # an engine that crops its output: compare on the common centre
                from direct.data.transforms import center_crop

                out = center_crop(out, target.shape[-2:])
                return ((out - center_crop(target, out.shape[-2:])) ** 2).flatten(1).mean(1)
            return ((out - target) ** 2).flatten(1).mean(1)

        settings = PGDSettings(
            norm=NormType(spec.budget.norm),
            steps=spec.steps,
            step_fraction=spec.step_fraction,
            random_start=spec.random_start,
            eot_samples=spec.eot_samples if model.is_randomized else 1,
            keep_best=spec.keep_best,
        )
        t0 = time.perf_counter()
        result = pgd(objective, signal.shape, support, eps, settings, generator, lift)
        self.timings["attack_s"] += time.perf_counter() - t0
        facts["attack_objective"] = result.objective.tolist()
        return result.kspace_delta, facts

    def evaluate_unit(self, condition: Condition, batch: dict, batch_key: str, clean_cache: dict) -> list[dict]:
        from direct.nn.mri_models import _compute_resolution, _process_output

        spec = condition.perturbation
        seed = condition.seed(self.settings.seed, batch_key)
        # The clean reconstruction is shared by all conditions of a batch (and cached): its noise seed must not
        # depend on which condition happens to compute it first, or --resume would change randomized models' f(y).
        clean_seed = Condition("clean", condition.perturbation).seed(self.settings.seed, batch_key)
        crop = self.data_model.cfg.inference.crop
        resolution = _compute_resolution(crop, batch.get("reconstruction_size"))
        target_img = _process_output(batch["target"], batch["scaling_factor"], resolution).squeeze(1)
        overrides = {"num_steps": condition.num_steps, "sigma": condition.sigma, "num_samples": condition.num_samples}

        shared_delta, shared_facts = None, None
        if spec.transfer_from is not None:
            source = self.models[spec.transfer_from]
            with source.settings(**overrides) as ok:
                if ok:
                    shared_delta, shared_facts = self._attack_delta(
                        source, condition, batch, seed, clean_seed, clean_cache
                    )
            if shared_delta is None:
                return []  # the source cannot run under this condition: the whole cell is n/a
        records = []
        for model in self.models.values():
            with model.settings(**overrides) as ok:
                if not ok:
                    continue  # reported as n/a
                t0 = time.perf_counter()
                if shared_delta is not None:
                    delta, facts = shared_delta, {**shared_facts, "source": spec.transfer_from}
                else:
                    delta, facts = self._attack_delta(model, condition, batch, seed, clean_seed, clean_cache)
                clean = self._clean(model, condition, batch, clean_seed, clean_cache)
                with torch.no_grad():
                    output = model.reconstruct(batch, delta, noise_seed=seed) if spec.kind != "clean" else clean
                elapsed = time.perf_counter() - t0
                image = _process_output(output, batch["scaling_factor"], resolution).squeeze(1)
                if condition.group == "main" and batch_key == self.first_batch:
                    self.panels[f"{spec.name}|{model.name}"] = image[0].detach().cpu().numpy()
                    self.panels["target"] = target_img[0].detach().cpu().numpy()
                metrics = slice_metrics(target_img, image)
                errors = robustness_errors(output, clean, delta)
                for i, (m, e) in enumerate(zip(metrics, errors)):
                    records.append(
                        {
                            "condition": condition.id,
                            "group": condition.group,
                            "sweep_value": condition.sweep_value,
                            "perturbation": spec.name,
                            "model": model.name,
                            "batch": batch_key,
                            "file": pathlib.Path(batch["filename"][i]).name,
                            "slice": int(batch["slice_no"][i]),
                            "seed": seed,
                            "eps": facts["eps"][i] if isinstance(facts["eps"], list) else facts["eps"],
                            **(
                                {"attack_objective": facts["attack_objective"][i]}
                                if "attack_objective" in facts
                                else {}
                            ),
                            **({"source": facts["source"]} if "source" in facts else {}),
                            **m,
                            **e,
                            "seconds": elapsed / len(metrics),
                        }
                    )
        return records

    def _attack_delta(self, model, condition, batch, seed, clean_seed, clean_cache):
        spec = condition.perturbation
        if spec.kind == PerturbationKind.PGD and spec.target == AttackTarget.CLEAN:
            target = self._clean(model, condition, batch, clean_seed, clean_cache).detach()
        else:
            target = batch["target"]
        return self.perturbation_for(model, spec, batch, seed, target)


def run_evaluation(model_specs: list[str], protocol_path: str | pathlib.Path, settings: RunSettings) -> dict:
    """Load protocol and models, evaluate, write the reports; returns the paths of the written files.

    Parameters
    ----------
    model_specs : list[str]
        ``NAME=CONFIG.yaml:CHECKPOINT.pt`` entries; the first is the reference unless `settings.reference` is set.
    protocol_path : str or pathlib.Path
        Robustness protocol YAML.
    settings : RunSettings
        Data, output, seed, device, batching, resume.
    """
    import random

    import numpy as np

    from smug_plugin.robustness.loading import ModelSpec, load_model
    from smug_plugin.robustness.protocol import load_protocol
    from smug_plugin.robustness.report import write_reports

    if not model_specs:
        raise ValueError("Give at least one --model NAME=CONFIG.yaml:CHECKPOINT.pt.")
    protocol = load_protocol(protocol_path)
    if settings.seed is None:
        settings.seed = protocol.seed
    specs = [ModelSpec.parse(s) for s in model_specs]
    for spec in specs:
        spec.check_files()  # fail on a missing checkpoint before spending time on loading others
    if not pathlib.Path(settings.data_root).is_dir():
        raise FileNotFoundError(f"Data root not found: {settings.data_root}")
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    log_dir = settings.output_dir / "direct_logs"
    models = [load_model(spec, settings.device, log_dir) for spec in specs]
    store = prepare_output(models, protocol, settings)
    evaluator = Evaluator(models, protocol, settings)
    protocol = evaluator.protocol  # with transfer_from: each expanded per source model
    started = time.time()

    def report() -> dict:
        run = {
            "seed": settings.seed,
            "protocol_seed": protocol.seed,
            "data_root": str(settings.data_root),
            "batch_size": settings.batch_size,
            "max_slices": settings.max_slices,
            "device": settings.device,
            "resumed": settings.resume,
            "torch_threads": torch.get_num_threads(),
            "wall_seconds_this_session": time.time() - started,
            "timings": dict(evaluator.timings),
            "data_from_model": evaluator.data_model.name,
            "complete": False,
        }
        return run

    describe = [m.describe() for m in models]
    layout = [
        {"condition": c.id, "group": c.group, "sweep_value": c.sweep_value, "perturbation": c.perturbation.name}
        for c in protocol.conditions()
    ]
    evaluator.run(
        store,
        on_progress=lambda: write_reports(
            settings.output_dir, store.records, describe, evaluator.reference, protocol.to_dict(), report(), layout
        ),
    )
    final = report() | {"complete": True}
    paths = write_reports(
        settings.output_dir, store.records, describe, evaluator.reference, protocol.to_dict(), final, layout
    )
    from smug_plugin.robustness.figures import make_figures

    paths.update(make_figures(settings.output_dir, store.records, describe))
    return paths
