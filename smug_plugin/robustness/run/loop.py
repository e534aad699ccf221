"""The evaluation loop: every data batch x every condition (perturbation under test-time settings) x every model.

The loop knows conditions, models and records, not individual attacks or sweeps: each condition's perturbation is
an attack object called the same way for every model. Seeds are derived from what a unit is (`seeds`), never from
the order of work, and each unit's panel images are stored with its records, so a resumed run gives the same numbers
and figures as an uninterrupted one.
"""

import itertools
import pathlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from smug_plugin import direct_adapter
from smug_plugin.robustness.activity import ACTIVITY
from smug_plugin.robustness.attacks import Attack, AttackOutcome, Targets
from smug_plugin.robustness.attacks.budgets import PAPER_NEEDS_FULLY_SAMPLED
from smug_plugin.robustness.metrics import psnr_per_slice, robustness_errors, slice_metrics
from smug_plugin.robustness.reconstructors.interface import (
    ConfiguredModel,
    EngineReconstructor,
    UnsupportedSettings,
)
from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch, reference_scale
from smug_plugin.robustness.run.progress import Progress
from smug_plugin.robustness.run.protocol import Condition, PerturbationSpec, Protocol
from smug_plugin.robustness.run.records import RecordStore, Unit
from smug_plugin.robustness.seeds import clean_seed


@dataclass(frozen=True)
class PlannedUnit:
    """One unit of work: a condition on one batch, and the dataset indices of the batch's slices."""

    unit: Unit  # (data, condition id, batch key)
    condition: Condition
    indices: tuple[int, ...]


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
        key = (model.name, replace(model.settings, normalisation=None))  # the same clean image under either
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
    normalisation_shift: torch.Tensor | None = None  # how far the model's input normalisation moved (batch,)


def scale_facts(eps: float, scale: float | None) -> dict:
    """The slice's intensity scale s_ref (DIRECT units, None without fully sampled k-space) and eps in units of it
    (the papers' units), next to ``eps`` in DIRECT's units."""
    return {"intensity_scale": scale, "eps_paper": None if scale is None else eps / scale}


def scale_stability(measurement: Measurement, normalisation: str) -> list[dict]:
    """Per slice: the threat model's normalisation, the factor by which the model's input normalisation moved under
    the perturbation (1 = not at all; None where the model has none that depends on its input) and the output's
    overall scale, mean |perturbed reconstruction| / mean |clean reconstruction| (the sanity check `scale_steady`)."""
    output = measurement.output.detach().abs().flatten(1).mean(dim=1)
    clean = measurement.clean.detach().abs().flatten(1).mean(dim=1).clamp_min(1e-30)
    shift = measurement.normalisation_shift
    return [
        {
            "normalisation": normalisation,
            "normalisation_shift": None if shift is None else float(shift[i]),
            "output_scale_ratio": float(output[i] / clean[i]),
        }
        for i in range(output.shape[0])
    ]


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
    errors = robustness_errors(measurement.output, measurement.clean, measurement.kspace_delta, batch["masked_kspace"])
    stability = scale_stability(measurement, condition.settings.threat_normalisation.value)
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
            **stability[i],
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
        self._datasets: dict[tuple, object] = {}

    def attack_for(self, condition: Condition) -> Attack:
        """The attack of the condition's perturbation (a sweep may vary it, e.g. its budget), built once."""
        spec = condition.perturbation
        if spec not in self.attacks:
            self.attacks[spec] = spec.attack(self.models)
        return self.attacks[spec]

    def plan(self) -> list[PlannedUnit]:
        """Every unit of the run, in the order one process computes them: the data shifts (masks) in the protocol's
        order, the batches of each in volume order, and the conditions on each batch in the protocol's order."""
        groups: dict[tuple, list[Condition]] = defaultdict(list)
        for c in self.protocol.conditions():
            groups[c.data_key].append(c)
        units = []
        for data_key, conditions in groups.items():
            data_id = "default" if data_key[0] is None else f"acc={data_key[0]:g}"
            dataset = self.dataset(data_key)
            batches = list(
                iterate_batches(self.data_model, dataset, self.settings.batch_size, self.settings.max_slices)
            )
            if data_key == (None, None) and batches:
                self.first_batch = batches[0][0]
            for key, indices in batches:
                units += [PlannedUnit((data_id, c.id, key), c, tuple(indices)) for c in conditions]
        return units

    def dataset(self, data_key: tuple):
        """The inference dataset of the data shift ``data_key`` (acceleration, centre fraction), built once."""
        if data_key not in self._datasets:
            self._datasets[data_key] = build_dataset(self.data_model, self.settings.data_root, *data_key)
        return self._datasets[data_key]

    def run(
        self,
        store: RecordStore,
        units: list[PlannedUnit] | None = None,
        progress: Progress | None = None,
        on_data_done: Callable[[], object] | None = None,
    ) -> None:
        """Compute ``units`` (in the plan's order, none finished) and append each to ``store`` when it is done.

        Parameters
        ----------
        store : RecordStore
            This process's record file.
        units : list[PlannedUnit], optional
            The units to compute: a rank's share of the plan; by default the plan less what ``store`` holds.
        progress : Progress, optional
            Told about every unit.
        on_data_done : callable, optional
            Called when the units of one data shift are done (to write interim reports).
        """
        if units is None:
            units = [u for u in self.plan() if u.unit not in store.done]
        data_key = None
        for (data_id, batch_key), group in itertools.groupby(units, key=lambda u: (u.unit[0], u.unit[2])):
            group = list(group)
            if group[0].condition.data_key != data_key:
                if data_key is not None and on_data_done is not None:
                    on_data_done()
                data_key = group[0].condition.data_key
                dataset = self.dataset(data_key)
                for model in self.models.values():
                    model.use_dimensionality(dataset.ndim)
            t0 = time.perf_counter()
            batch = load_batch(dataset, list(group[0].indices), self.settings.device)
            self.timings["data_s"] += time.perf_counter() - t0
            scale = self.reference_scale(batch)
            cleans = CleanReconstructions(batch, self.settings.seed, data_id, batch_key)
            for planned in group:
                if progress is not None:
                    progress.unit_started(planned.condition.id, batch_key)
                records, panels = self.evaluate_unit(planned.unit, planned.condition, batch, cleans, scale)
                store.append_unit(planned.unit, records, panels)
                if progress is not None:
                    progress.unit_finished(planned.condition.id, records)
        if data_key is not None and on_data_done is not None:
            on_data_done()

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
        resolution = direct_adapter.output_resolution(self.data_model.cfg.inference.crop, batch)
        target_image = direct_adapter.scaled_image(batch["target"], batch, resolution)

        def psnr(output: torch.Tensor) -> torch.Tensor:
            return psnr_per_slice(target_image, direct_adapter.scaled_image(output, batch, resolution))

        targets = Targets(batch["target"], cleans.get, scale, psnr)
        scales = [None] * len(batch["filename"]) if scale is None else scale.tolist()
        attack = self.attack_for(condition)
        with_panels = condition.group == "main" and batch_key == self.first_batch
        records, panels = [], {}
        for reconstructor in self.models.values():
            ACTIVITY.model, ACTIVITY.steps = reconstructor.name, 0
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
        shift = model.normalisation_shift(batch, outcome.kspace_delta)
        return Measurement(outcome, output, reference, delta, time.perf_counter() - t0, shift)
