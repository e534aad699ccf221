"""DIRECT engines of the plugin models (``direct.nn.smug.smug_engine.<Class>Engine``).

DIRECT's ``MRIModelEngine`` does the iteration, the backward pass, validation and checkpointing. These engines
add the family's forward call and its losses, which DIRECT's hard-coded loss list does not know:
``denoiser_loss`` (pre-training, ``smug.didn.DIDN``), ``ustab_loss`` (fine-tuning) and ``complex_mse_loss`` (the
journal's reconstruction term). They need quantities DIRECT's loss signature ``fn(source, target, reduction, size)``
cannot carry (the denoiser outputs at every unroll, the complex output and target), so ``forward_function`` keeps
them for the loss callables of the same iteration. RS-E2E may train towards a frozen MoDL's reconstruction instead
of the ground truth (``rs_e2e_target: teacher``, the published training). With ``adversarial_training_budget > 0``
the unrolled models train adversarially: a share of the training batches is replaced by its PGD-attacked version
(the evaluation's attack and threat model) before the loss (:meth:`UnrolledEngine.forward_function`).
"""

import copy
import pathlib
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from direct.data.transforms import modulus
from direct.nn.loss_keys import KeyedLossFn
from direct.nn.mri_models import MRIModelEngine
from direct.utils.events import get_event_storage
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from smug_plugin.losses.smoothing import (
    COMPLEX_MSE_LOSS,
    DENOISER_LOSS,
    PLUGIN_LOSSES,
    USTAB_LOSS,
    RSE2ETarget,
    UStabTarget,
    complex_mse_loss,
    complex_target_image,
    denoiser_pretraining_loss,
    ustab_anchors,
    ustab_loss,
)
from smug_plugin.models.checkpoint import MODEL_NAME_KEY, read_model_state, state_mismatch
from smug_plugin.models.denoiser import apply_denoiser, load_denoiser_state
from smug_plugin.models.modl import MoDL
from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.validation import AdversarialTraining, RobustValidation, attacked_kspace
from smug_plugin.units import (
    IntensityScale,
    from_unit_scale,
    parse_choice,
    reference_intensity_scale,
    to_unit_scale,
)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside DistributedDataParallel, if wrapped."""
    return getattr(model, "module", model)


class _FamilyEngine(MRIModelEngine):
    """Common part: plugin losses next to DIRECT's own in ``training.loss.losses``; checkpoints name their model."""

    supported_losses: tuple[str, ...] = ()

    def _require_checkpointer(self):
        checkpointer = super()._require_checkpointer()
        # Every checkpoint written from here on names the model it was trained as (MODEL_NAME_KEY).
        checkpointer.checkpointables.setdefault(MODEL_NAME_KEY, str(self.cfg.model.model_name))
        return checkpointer

    def __init__(
        self, cfg, model, device, forward_operator=None, backward_operator=None, mixed_precision=False, **models
    ):
        super().__init__(
            cfg,
            model,
            device,
            forward_operator=forward_operator,
            backward_operator=backward_operator,
            mixed_precision=mixed_precision,
            **models,
        )
        self._loss_inputs: dict[str, Any] = {}

    def _plugin_loss_names(self) -> list[str]:
        training = getattr(self.cfg, "training", None)
        if training is None:
            return []
        names = [str(loss.function) for loss in training.loss.losses if str(loss.function) in PLUGIN_LOSSES]
        unsupported = sorted(set(names) - set(self.supported_losses))
        if unsupported:
            raise ValueError(
                f"Loss {', '.join(unsupported)} is not available for {self.cfg.model.model_name}; this model "
                f"supports {', '.join(self.supported_losses) or 'no plugin loss'} besides DIRECT's losses."
            )
        return names

    def build_loss(self) -> dict:
        """DIRECT's losses for the native names, plus the plugin's losses for the plugin names."""
        losses = self.cfg.training.loss.losses
        plugin = [loss for loss in losses if str(loss.function) in PLUGIN_LOSSES]
        self._plugin_loss_names()  # validates the names before anything runs
        with _only_native_losses(self.cfg, [loss for loss in losses if str(loss.function) not in PLUGIN_LOSSES]):
            loss_fns = super().build_loss()
        for loss in plugin:
            loss_fns[str(loss.function)] = KeyedLossFn(
                self._plugin_loss(str(loss.function), float(loss.multiplier)), "output_image", "target"
            )
        return loss_fns

    def _plugin_loss(self, name: str, multiplier: float):
        def loss_fn(source, target, reduction="mean", reconstruction_size=None):
            if name not in self._loss_inputs:
                raise RuntimeError(f"{name} was called before the forward pass stored its inputs.")
            return multiplier * self._compute_plugin_loss(name)

        return loss_fn

    def _reference_scale(self, data: dict[str, Any]) -> torch.Tensor:
        """s_ref per slice, the unit of paper budgets (the evaluator may use the ground truth, as the papers do)."""
        return reference_intensity_scale(self._complex_target(data))

    def _complex_target(self, data: dict[str, Any]) -> torch.Tensor:
        if "kspace" not in data:
            raise KeyError(
                "The plugin losses need the fully sampled k-space: set `transforms.delete_kspace: false` in every "
                "training dataset of the config."
            )
        operator = MultiCoilOperator(
            self.forward_operator, self.backward_operator, data["sensitivity_map"].float(), data["sampling_mask"]
        )
        return complex_target_image(data["kspace"].float(), operator)


@contextmanager
def _only_native_losses(cfg, native_losses):
    """Temporarily shows DIRECT's ``build_loss`` only the loss names it knows."""
    # A copy: OmegaConf assigns into the existing list node, which would overwrite a kept reference.
    original = OmegaConf.to_container(cfg.training.loss.losses)
    cfg.training.loss.losses = [OmegaConf.to_container(loss) for loss in native_losses]
    try:
        yield
    finally:
        cfg.training.loss.losses = original


class UnrolledEngine(_FamilyEngine):
    """Engine of MoDL, SMUG, SMUGv0, Weighted SMUG and RS-E2E (one network class, one engine)."""

    supported_losses = (USTAB_LOSS, COMPLEX_MSE_LOSS)

    def __init__(
        self, cfg, model, device, forward_operator=None, backward_operator=None, mixed_precision=False, **models
    ):
        super().__init__(cfg, model, device, forward_operator, backward_operator, mixed_precision, **models)
        self._robust_validation = RobustValidation(
            budget=float(getattr(cfg.model, "robust_validation_budget", 0.0)),
            units=getattr(cfg.model, "robust_validation_units", IntensityScale.DIRECT),
            steps=int(getattr(cfg.model, "robust_validation_steps", 5)),
            seed=int(getattr(cfg.model, "robust_validation_seed", 0)),
        )
        self._adversarial_training = AdversarialTraining.of_model(cfg.model)
        self._attacking = False
        self._frozen_denoiser = None

    def train(
        self,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
        training_datasets: list[Dataset],
        experiment_directory: pathlib.Path,
        validation_datasets: list[Dataset] | None = None,
        resume: bool = False,
        start_with_validation: bool = False,
        initialization: str | pathlib.Path | None = None,
        num_workers: int = 6,
    ) -> None:
        """DIRECT's training, after reading the pre-trained denoisers named in the config.

        They are read here, not when the model is built, so a trained model predicts and is evaluated without the
        pre-training run's file. The frozen UStab denoiser is read on every start (it is not in the run's
        checkpoints); ``denoiser_checkpoint`` is not read when DIRECT restores the whole model anyway: on
        ``--resume`` with a checkpoint in the experiment directory, or with an initialization checkpoint.
        """
        self._load_frozen_denoiser()
        network = _unwrap(self.model)
        # DIRECT's own test for a run to resume (Checkpointer.load("latest")).
        resumable = (pathlib.Path(experiment_directory) / "last_model.txt").is_file()
        restored_by_direct = bool(initialization) or (resume and resumable)
        if restored_by_direct and network.denoiser_checkpoint:
            self.logger.info("model.denoiser_checkpoint is not read: DIRECT restores the model from a checkpoint.")
        elif network.load_pretrained_denoiser():
            self.logger.info("Denoiser initialised from model.denoiser_checkpoint %s.", network.denoiser_checkpoint)
        if self._adversarial_training.enabled:
            self.logger.info("Adversarial training: %s.", self._adversarial_training.describe())
        super().train(
            optimizer,
            lr_scheduler,
            training_datasets,
            experiment_directory,
            validation_datasets=validation_datasets,
            resume=resume,
            start_with_validation=start_with_validation,
            initialization=initialization,
            num_workers=num_workers,
        )

    def _load_frozen_denoiser(self) -> None:
        checkpoint = getattr(self.cfg.model, "ustab_frozen_denoiser_checkpoint", None)
        if not checkpoint:
            return
        frozen = copy.deepcopy(_unwrap(self.model).denoiser)
        load_denoiser_state(frozen, checkpoint, setting="ustab_frozen_denoiser_checkpoint")
        self._frozen_denoiser = frozen.to(self.device).eval().requires_grad_(False)

    def evaluate(self, data_loader, loss_fns):
        """DIRECT's validation; with ``robust_validation_budget > 0`` a second pass on PGD-attacked k-space whose
        metrics are added as ``<metric>_pgd`` (same json files and TensorBoard as DIRECT's own)."""
        result = super().evaluate(data_loader, loss_fns)
        if not self._robust_validation.enabled:
            return result
        # A fresh loader: DIRECT's sequential volume sampler cannot be iterated twice.
        sampler = self.build_batch_sampler(
            data_loader.dataset,
            batch_size=self.cfg.validation.batch_size,
            sampler_type="sequential",
            limit_number_of_volumes=None,
        )
        loader = self.build_loader(data_loader.dataset, batch_sampler=sampler, num_workers=data_loader.num_workers)
        self._attacking = True
        try:
            attacked_metrics = super().evaluate(loader, loss_fns)[1]
        finally:
            self._attacking = False
        loss_dict, metrics, *visualisation = result
        for volume, values in attacked_metrics.items():
            metrics.setdefault(volume, {}).update({f"{name}_pgd": value for name, value in values.items()})
        return (loss_dict, metrics, *visualisation)

    def forward_function(self, data: dict[str, Any]) -> tuple[torch.Tensor, None]:
        plugin_losses = self._plugin_loss_names() if self.model.training else []
        iteration = self._adversarial_iteration()
        # The evaluation's default threat model in robust validation and adversarial training too: the network's
        # intensity scale comes from the clean measurement, fixed during the attack and the attacked reconstruction
        # (models/unrolled.scale_from). Otherwise the scale is left as the caller set it (`smug evaluate` holds it
        # the same way).
        attacked = self._attacking or iteration is not None
        held_scale = _unwrap(self.model).scale_from(data["masked_kspace"]) if attacked else nullcontext()
        with held_scale:
            return self._forward(data, plugin_losses, iteration)

    def _adversarial_iteration(self) -> int | None:
        """DIRECT's training iteration when its batch is to be attacked (adversarial training), else None."""
        if not (self.model.training and self._adversarial_training.enabled):
            return None
        iteration = get_event_storage().iter
        return iteration if self._adversarial_training.attacks(iteration) else None

    def _forward(
        self, data: dict[str, Any], plugin_losses: list[str], adversarial_iteration: int | None = None
    ) -> tuple[torch.Tensor, None]:
        # RS-E2E's teacher reconstructs the clean batch: under adversarial training the target stays the clean one.
        teacher = self._teacher_reconstruction(data) if self.model.training else None
        if self._attacking:
            data["masked_kspace"] = self._attacked_kspace(data, self._robust_validation, self.model)
        elif adversarial_iteration is not None:
            # Madry-style: the current network in training mode (as the loss sees it; SMUG draws fresh noise in
            # every step), the unwrapped module so that DDP sees one forward per backward. The objective is the
            # evaluation's (MSE to the ground truth); parameter gradients of the ascent are never taken.
            data["masked_kspace"] = self._attacked_kspace(
                data, self._adversarial_training, _unwrap(self.model), adversarial_iteration
            )
        if teacher is not None:
            # DIRECT's losses read data["target"]: they compare the magnitude of the averaged output (not each draw's)
            # with the teacher's reconstruction; complex_mse_loss below takes the published per-draw form.
            if data["target"].shape != teacher.shape[:-1]:
                raise ValueError(
                    f"The teacher's reconstruction {tuple(teacher.shape[:-1])} and the training target "
                    f"{tuple(data['target'].shape)} differ in shape: rs_e2e_target: teacher needs uncropped targets."
                )
            data["target"] = modulus(teacher).to(data["target"].dtype)
        output = self.model(
            masked_kspace=data["masked_kspace"],
            sampling_mask=data["sampling_mask"],
            sensitivity_map=data["sensitivity_map"],
            return_details=bool(plugin_losses),
        )
        self._loss_inputs = {}
        if plugin_losses:
            output, details = output
            ground_truth = None
            if USTAB_LOSS in plugin_losses or teacher is None:
                ground_truth = self._complex_target(data)
            if USTAB_LOSS in plugin_losses:
                self._loss_inputs[USTAB_LOSS] = (details, ground_truth)
            if COMPLEX_MSE_LOSS in plugin_losses:
                self._loss_inputs[COMPLEX_MSE_LOSS] = self._complex_mse_inputs(output, details, ground_truth, teacher)
        return output, None

    def _attacked_kspace(
        self,
        data: dict[str, Any],
        settings: RobustValidation | AdversarialTraining,
        network: torch.nn.Module,
        iteration: int = 0,
    ) -> torch.Tensor:
        """The batch's k-space under the evaluation's PGD of ``settings`` (robust validation, adversarial training)."""
        mask, sensitivity_map = data["sampling_mask"], data["sensitivity_map"]
        return attacked_kspace(
            lambda kspace: network(kspace, mask, sensitivity_map),
            data["masked_kspace"],
            mask,
            data["target"],
            settings,
            self._reference_scale(data) if settings.needs_reference_scale else None,
            iteration=iteration,
            operator=lambda batch: _unwrap(self.model).operator(batch["sampling_mask"], sensitivity_map),
        ).detach()

    def _teacher_reconstruction(self, data: dict[str, Any]) -> torch.Tensor | None:
        """The target image of the reconstruction losses when it is not the ground truth (RS-E2E's teacher)."""
        return None

    @staticmethod
    def _complex_mse_inputs(output, details, ground_truth, teacher) -> tuple:
        """The prediction, target and slice weights of complex_mse_loss, in UStab's units (see
        :meth:`_compute_plugin_loss`). Towards a teacher, RS-E2E's error is taken per noise draw, as published."""
        if teacher is not None and details.draws is not None:
            prediction = details.draws  # already in units of s
        else:
            prediction = to_unit_scale(output, details.scale)
        target = to_unit_scale(ground_truth if teacher is None else teacher, details.scale)
        return prediction, target, _slice_weights(details)

    def _compute_plugin_loss(self, name: str) -> torch.Tensor:
        """UStab (and complex_mse_loss) on the unrolls' own scale. With ``intensity_scale: paper`` the iterates are
        in units of s: the target is divided by s, and the squared errors are weighted by s^2 per slice, which puts
        UStab in DIRECT's units like DIRECT's reconstruction loss next to it, so that lambda_l weighs the two as in
        the papers. complex_mse_loss is weighted alike, so that it and UStab keep the journal's ratio."""
        if name == COMPLEX_MSE_LOSS:
            return complex_mse_loss(*self._loss_inputs[name])
        details, target = self._loss_inputs[name]
        target = to_unit_scale(target, details.scale)
        network = _unwrap(self.model)
        frozen = None
        if self._frozen_denoiser is not None:
            frozen = lambda image: apply_denoiser(self._frozen_denoiser, image)  # noqa: E731
        anchors = ustab_anchors(
            UStabTarget(self.cfg.model.ustab_target),
            details.iterates,
            target,
            network.denoise,
            frozen,
            detach=bool(self.cfg.model.ustab_detach_target),
        )
        return ustab_loss(details.denoised, anchors, slice_weights=_slice_weights(details))


def _slice_weights(details) -> torch.Tensor | None:
    """s^2 per slice with ``intensity_scale: paper`` (errors in units of s back in DIRECT's units); else none."""
    return None if details.scale is None else details.scale.square()


class MoDLEngine(UnrolledEngine):
    """Engine of ``smug.modl.MoDL``."""


class SMUGEngine(UnrolledEngine):
    """Engine of ``smug.smug.SMUG``."""


class SMUGv0Engine(UnrolledEngine):
    """Engine of ``smug.smug.SMUGv0``."""


class WeightedSMUGEngine(UnrolledEngine):
    """Engine of ``smug.weighted_smug.WeightedSMUG``."""


class RSE2EEngine(UnrolledEngine):
    """Engine of ``smug.rs_e2e.RSE2E``; with ``rs_e2e_target: teacher`` the reconstruction losses compare with a
    frozen MoDL's reconstruction of the batch (the published training) instead of the ground truth."""

    def __init__(
        self, cfg, model, device, forward_operator=None, backward_operator=None, mixed_precision=False, **models
    ):
        super().__init__(cfg, model, device, forward_operator, backward_operator, mixed_precision, **models)
        self._teacher: MoDL | None = None

    def train(self, *args, **kwargs) -> None:
        """DIRECT's training, after reading the teacher (it is not part of the run's checkpoints)."""
        self._load_teacher()
        super().train(*args, **kwargs)

    def _load_teacher(self) -> None:
        """Builds the frozen MoDL of ``rs_e2e_target: teacher`` with this model's network settings and no noise."""
        model_cfg = self.cfg.model
        target = parse_choice(RSE2ETarget, "rs_e2e_target", getattr(model_cfg, "rs_e2e_target", "ground_truth"))
        if target != RSE2ETarget.TEACHER:
            if getattr(model_cfg, "rs_e2e_teacher_checkpoint", None):
                self.logger.warning("model.rs_e2e_teacher_checkpoint is not read: rs_e2e_target is ground_truth.")
            return
        checkpoint = getattr(model_cfg, "rs_e2e_teacher_checkpoint", None)
        if not checkpoint:
            raise ValueError(
                "rs_e2e_target: teacher needs model.rs_e2e_teacher_checkpoint: set it to a model_<iteration>.pt of a "
                "`direct train` run of smug.modl.MoDL, or set rs_e2e_target: ground_truth."
            )
        settings = (
            "num_steps",
            "lambda_init",
            "cg_iters",
            "cg_tol",
            "denoiser_hidden_channels",
            "denoiser_num_dubs",
            "denoiser_num_convs_recon",
            "intensity_scale",
            "intensity_scale_statistic",
        )
        teacher = MoDL(self.forward_operator, self.backward_operator, **{k: getattr(model_cfg, k) for k in settings})
        state = read_model_state(checkpoint, "rs_e2e_teacher_checkpoint", models="smug.modl.MoDL")
        # Weights alone cannot tell MoDL from SMUG or RS-E2E (the same tensors); other models and sizes differ.
        mismatch = state_mismatch(teacher.state_dict(), state)
        if mismatch:
            raise ValueError(
                f"model.rs_e2e_teacher_checkpoint {str(checkpoint)!r} is not a smug.modl.MoDL with this config's "
                f"denoiser_* settings ({mismatch}): point it at such a run's model_<iteration>.pt."
            )
        teacher.load_state_dict(state, strict=True)
        self._teacher = teacher.to(self.device).eval().requires_grad_(False)

    def _teacher_reconstruction(self, data: dict[str, Any]) -> torch.Tensor | None:
        if self._teacher is None:
            return None
        with torch.no_grad():
            return self._teacher(data["masked_kspace"], data["sampling_mask"], data["sensitivity_map"])


class DIDNEngine(_FamilyEngine):
    """Pre-training of the denoiser: input t + eta, output D(t + eta), loss ``denoiser_loss`` towards t.

    With ``intensity_scale: paper`` t is divided by its scale s first, the loss is taken in those units and the
    output multiplied back. Validation reports DIRECT's metrics of |D(t + eta)| against the target, i.e. denoising
    quality.
    """

    supported_losses = (DENOISER_LOSS,)

    def forward_function(self, data: dict[str, Any]) -> tuple[torch.Tensor, None]:
        network = _unwrap(self.model)
        target = self._complex_target(data)
        scale = network.target_scale(target)
        target = to_unit_scale(target, scale)
        denoised = self.model(network.add_noise(target))
        self._loss_inputs = {DENOISER_LOSS: (denoised, target)}
        return from_unit_scale(denoised, scale), None

    def _compute_plugin_loss(self, name: str) -> torch.Tensor:
        denoised, target = self._loss_inputs[name]
        return denoiser_pretraining_loss(denoised, target)
