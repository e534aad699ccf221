"""The evaluation loop: every data batch x every condition (perturbation under test-time settings) x every model.

The loop knows conditions, models and records, not individual attacks or sweeps: each condition's perturbation is
an attack object called the same way for every model. Seeds are derived from what a unit is (`seeds`), never from
the order of work, and each unit's panel images are stored with its records, so a resumed run gives the same numbers
and figures as an uninterrupted one.
"""

import pathlib
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from smug_plugin.robustness import direct_adapter
from smug_plugin.robustness.attacks import Attack, AttackOutcome, Targets
from smug_plugin.robustness.attacks.budgets import PAPER_NEEDS_FULLY_SAMPLED
from smug_plugin.robustness.batches import build_dataset, iterate_batches, load_batch, reference_scale
from smug_plugin.robustness.metrics import robustness_errors, slice_metrics
from smug_plugin.robustness.protocol import Condition, PerturbationSpec, Protocol
from smug_plugin.robustness.reconstructors import (
    ConfiguredModel,
    EngineReconstructor,
    UnsupportedSettings,
)
from smug_plugin.robustness.records import RecordStore, Unit
from smug_plugin.robustness.seeds import clean_seed


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


class CleanReconstructions:
    """The clean reconstruction of each model under each test-time setting, computed once per batch.

    Parameters
    ----------
    batch : dict
        The batch as acquired.
    base : int
        The run seed.
    data, batch_key : str
        The data and the batch key of the batch, named by the noise seed (`seeds.clean_seed`).
    """

    def __init__(self, batch: dict, base: int, data: str, batch_key: str):
        self.batch = batch
        self.base, self.data, self.batch_key = base, data, batch_key
        self._cache: dict[tuple, torch.Tensor] = {}

    def seed(self, model: ConfiguredModel) -> int:
        return clean_seed(self.base, model.name, model.settings, self.data, self.batch_key)

    def get(self, model: ConfiguredModel) -> torch.Tensor:
        key = (model.name, model.settings)
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = model.reconstruct(self.batch, None, noise_seed=self.seed(model))
        return self._cache[key]


@dataclass
class Measurement:
    """One model under one condition on one batch: the attack's outcome and the reconstructions."""

    outcome: AttackOutcome
    output: torch.Tensor  # reconstruction of the perturbed batch (normalised units)
    clean: torch.Tensor  # reconstruction of the batch as acquired
    kspace_delta: torch.Tensor
    seconds: float


def scale_facts(eps: float, scale: float | None) -> dict:
    """The slice's intensity scale s_ref (DIRECT units, None without fully sampled k-space) and eps in units of it
    (the papers' units), next to ``eps`` in DIRECT's units."""
    return {"intensity_scale": scale, "eps_paper": None if scale is None else eps / scale}


def slice_records(
    unit: Unit,
    condition: Condition,
    model: str,
    batch: dict,
    seeds: tuple[int, int],
    measurement: Measurement,
    metrics: list[dict],
    scales: list[float | None],
) -> list[dict]:
    """One record per slice: where it came from, its seeds (condition, clean reconstruction), the perturbation's
    facts, the slice's intensity scale, image metrics and robustness errors."""
    errors = robustness_errors(measurement.output, measurement.clean, measurement.kspace_delta)
    return [
        {
            "condition": condition.id,
            "group": condition.group,
            "sweep_value": condition.sweep_value,
            "perturbation": condition.perturbation.name,
            "model": model,
            "data": unit[0],
            "batch": unit[2],
            "file": pathlib.Path(batch["filename"][i]).name,
            "slice": int(batch["slice_no"][i]),
            "seed": seeds[0],
            "clean_seed": seeds[1],
            **measurement.outcome.facts(i),
            **scale_facts(measurement.outcome.eps[i], scales[i]),
            **m,
            **e,
            "seconds": measurement.seconds / len(metrics),
        }
        for i, (m, e) in enumerate(zip(metrics, errors))
    ]


class Evaluator:
    """Runs the conditions of a protocol on loaded models and writes records as they are computed."""

    def __init__(self, models: list[EngineReconstructor], protocol: Protocol, settings: RunSettings):
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"Model names must be unique, got {names}.")
        self.models = {m.name: m for m in models}
        self.protocol = protocol.for_models(names)
        self.settings = settings
        self.reference = settings.reference or names[0]
        if self.reference not in self.models:
            raise ValueError(f"Reference model '{self.reference}' is not among the models {names}.")
        # Built before any work, so that a transfer from an unknown model fails at once.
        self.attacks: dict[PerturbationSpec, Attack] = {p: p.attack(self.models) for p in self.protocol.perturbations}
        # Data come from one model's YAML (the reference) so every model sees identical batches.
        # A CS model has no engine: the data come from the DIRECT model whose operator it borrows.
        self.data_model = getattr(self.models[self.reference], "data_model", self.models[self.reference])
        self.timings: dict[str, float] = defaultdict(float)
        # The panels show the first slice of the first batch of the main conditions, per perturbation and model.
        self.first_batch: str | None = None

    def attack_for(self, condition: Condition) -> Attack:
        """The attack of the condition's perturbation (a sweep may vary it, e.g. its budget), built once."""
        spec = condition.perturbation
        if spec not in self.attacks:
            self.attacks[spec] = spec.attack(self.models)
        return self.attacks[spec]

    def run(self, store: RecordStore, on_progress=None) -> None:
        from tqdm import tqdm

        groups: dict[tuple, list[Condition]] = defaultdict(list)
        for c in self.protocol.conditions():
            groups[c.data_key].append(c)
        for data_key, conditions in groups.items():
            data_id = "default" if data_key[0] is None else f"acc={data_key[0]:g}"
            dataset = build_dataset(self.data_model, self.settings.data_root, *data_key)
            for model in self.models.values():
                model.use_dimensionality(dataset.ndim)
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
                scale = self.reference_scale(batch)
                cleans = CleanReconstructions(batch, self.settings.seed, data_id, batch_key)
                for condition in todo:
                    bar.set_postfix_str(condition.id)
                    unit = (data_id, condition.id, batch_key)
                    store.append_unit(unit, *self.evaluate_unit(unit, condition, batch, cleans, scale))
            if on_progress is not None:
                on_progress()

    def reference_scale(self, batch: dict) -> torch.Tensor | None:
        """The papers' intensity scale s_ref of the batch's slices, from the data model's operator, before any
        attack (`batches.reference_scale`); a protocol with `paper` budgets stops on data without it."""
        scale = reference_scale(self.data_model, batch)
        if scale is None and self.protocol.needs_reference_scale:
            raise ValueError(f"{batch['filename'][0]} holds no fully sampled k-space: {PAPER_NEEDS_FULLY_SAMPLED}.")
        return scale

    def evaluate_unit(
        self,
        unit: Unit,
        condition: Condition,
        batch: dict,
        cleans: CleanReconstructions,
        scale: torch.Tensor | None,
    ) -> tuple[list[dict], dict[str, np.ndarray]]:
        """Per-slice records of every model that can run under ``condition`` (the others are reported n/a), and
        the unit's panel images (none unless it is a main condition on the first batch). ``scale`` is the slices'
        s_ref (`reference_scale`), the unit of `paper` budgets."""
        batch_key = unit[2]
        seed = condition.seed(self.settings.seed, batch_key)
        targets = Targets(batch["target"], cleans.get, scale)
        scales = [None] * len(batch["filename"]) if scale is None else scale.tolist()
        attack = self.attack_for(condition)
        resolution = direct_adapter.output_resolution(self.data_model.cfg.inference.crop, batch)
        target_image = direct_adapter.scaled_image(batch["target"], batch, resolution)
        with_panels = condition.group == "main" and batch_key == self.first_batch
        records, panels = [], {}
        for reconstructor in self.models.values():
            model = ConfiguredModel(reconstructor, condition.settings)
            measurement = self.measure(model, attack, batch, targets, seed)
            if measurement is None:
                continue  # reported as n/a
            image = direct_adapter.scaled_image(measurement.output, batch, resolution)
            if with_panels:
                panels[f"{condition.perturbation.name}|{model.name}"] = image[0].detach().cpu().numpy()
                panels["target"] = target_image[0].detach().cpu().numpy()
            metrics = slice_metrics(target_image, image)
            seeds = (seed, cleans.seed(model))
            records += slice_records(unit, condition, model.name, batch, seeds, measurement, metrics, scales)
        return records, panels

    def measure(
        self, model: ConfiguredModel, attack: Attack, batch: dict, targets: Targets, seed: int
    ) -> Measurement | None:
        """Attack ``model`` and reconstruct the perturbed batch; None when the model cannot run the condition."""
        if model.reconstructor.unsupported(model.settings):
            return None
        t0 = time.perf_counter()
        try:
            outcome = attack(model, batch, targets, seed)
        except UnsupportedSettings:
            return None  # a transferred attack whose source cannot run under this condition
        self.timings["attack_s"] += time.perf_counter() - t0
        reference = targets.clean(model)
        if outcome.kspace_delta is None:
            output, delta = reference, torch.zeros_like(batch["masked_kspace"])
        else:
            delta = outcome.kspace_delta
            with torch.no_grad():
                output = model.reconstruct(batch, delta, noise_seed=seed)
        return Measurement(outcome, output, reference, delta, time.perf_counter() - t0)
