"""Writes the DIRECT training configs under projects/ from one description, so that every model of a study sees
the same data, masks, sensitivity maps and metrics.

    python scripts/generate_projects.py          # rewrite projects/
    python scripts/generate_projects.py --check  # fail if projects/ differs (run by the tests)

Edit this file, not the YAMLs.
"""

import argparse
import copy
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAPER_OPTIMIZER = "Adam(betas=(0.5, 0.999))"  # published: Adam, lr 1e-4, betas (0.5, 0.999)
METRICS = ["fastmri_psnr", "fastmri_ssim", "fastmri_nmse"]

# ----------------------------------------------------------------------------------------------- data
FASTMRI = {
    "knee": {"crop": "reconstruction_size", "maps": "espirit", "accelerations": [(4, 0.08), (8, 0.04)]},
    "brain": {"crop": "reconstruction_size", "maps": "espirit", "accelerations": [(4, 0.08), (8, 0.04)]},
    # The bundled Colin27 simulation (smug data demo): 96 x 80, no crop, fast RSS-estimated maps.
    "demo": {"crop": None, "maps": "rss_estimate", "accelerations": [(4, 0.08)]},
}


UNROLLS = {"paper": 8, "demo": 5}


def transforms(anatomy: str, acceleration: float, center_fraction: float) -> dict:
    data = FASTMRI[anatomy]
    return {
        "masking": {"name": "FastMRIRandom", "accelerations": [acceleration], "center_fractions": [center_fraction]},
        "cropping": {"crop": data["crop"], "image_center_crop": data["crop"] is not None},
        "sensitivity_map_estimation": {
            "estimate_sensitivity_maps": True,
            "sensitivity_maps_type": data["maps"],
            "sensitivity_maps_gaussian": 0.7,
        },
        "normalization": {"scaling_key": "masked_kspace", "scale_percentile": 0.99},
        "padding_eps": 0.0001,
        # The plugin losses need the fully sampled k-space (complex target image).
        "delete_kspace": False,
    }


def training_datasets(anatomy: str) -> list[dict]:
    # One model is trained for all accelerations of the study, as in the papers (one run per acceleration is a
    # matter of keeping one entry).
    accelerations = FASTMRI[anatomy]["accelerations"]
    masks = {
        "name": "FastMRIRandom",
        "accelerations": [a for a, _ in accelerations],
        "center_fractions": [c for _, c in accelerations],
    }
    first = transforms(anatomy, *accelerations[0])
    return [{"name": "FastMRI", "transforms": {**first, "masking": masks}}]


def validation_datasets(anatomy: str) -> list[dict]:
    return [
        {"name": "FastMRI", "text_description": f"{int(a)}x", "transforms": transforms(anatomy, a, c)}
        for a, c in FASTMRI[anatomy]["accelerations"]
    ]


# ----------------------------------------------------------------------------------------------- models
def denoiser(size: str) -> dict:
    if size == "paper":  # 3 down-up blocks x 64 channels, about 5 M parameters
        return {"denoiser_hidden_channels": 64, "denoiser_num_dubs": 3, "denoiser_num_convs_recon": 9}
    return {"denoiser_hidden_channels": 16, "denoiser_num_dubs": 1, "denoiser_num_convs_recon": 3}


def unrolled(size: str, name: str, pretrained: str | None, **extra) -> dict:
    steps = UNROLLS[size]
    model = {"model_name": name, "num_steps": steps, "lambda_init": 1.0, "cg_iters": 10 if size == "paper" else 8}
    model.update(cg_tol=1e-6, **denoiser(size), denoiser_checkpoint=pretrained, **extra)
    if size == "demo":
        # Watch robustness while training: validation PSNR/SSIM under a 3-step k-space PGD (<metric>_pgd).
        # The budget in the model's units: eps 0.02 x s_ref (the papers') for the paper-unit models.
        model.update(robust_validation_budget=0.02, robust_validation_steps=3)
        if extra.get("intensity_scale") == "paper":
            model["robust_validation_units"] = "paper"
    return model


def intensity_units(units: str) -> dict:
    # "paper": every slice runs divided by its intensity scale s (max |Re|, |Im| of A^H y), so sigma and the clamp are
    # in the papers' units. "direct": DIRECT's normalised units, the models' default (no key written).
    return {"intensity_scale": "paper"} if units == "paper" else {}


def smoothing(size: str, units: str) -> dict:
    # Papers: sigma 0.01, K = 10, noisy inputs clamped to [-1, 1] (published code; defined in the papers' units only).
    # The demo keeps sigma and uses K = 4 to fit a 2-core CPU.
    settings = {"sigma": 0.01, "num_samples": 10 if size == "paper" else 4, "reuse_noise": False, "noise_seed": 0}
    return settings | ({"clamp_noisy_input": True} if units == "paper" else {})


def journal_multiplier(lambda_l: float, size: str) -> float:
    """The reconstruction-loss multiplier that weighs UStab as the journal's lambda_l does: its UStab sums 8 unroll
    terms, ours num_steps, so the same ratio needs lambda_l * num_steps / 8 (with the journal's complex MSE)."""
    return round(lambda_l * UNROLLS[size] / 8, 6)


def models(
    size: str, pretrained: str | None, lambda_l: float = 1.0, units: str = "direct", teacher: str | None = None
) -> dict[str, tuple[dict, list[dict]]]:
    """name -> (model section, losses); lambda_l is the journal-equivalent weight of the reconstruction loss next to
    UStab (:func:`journal_multiplier`), units the models' intensity_scale. In the papers' units the reconstruction
    loss is the journal's 2-channel complex MSE and RS-E2E is trained as published (clean A^H y in the DC steps,
    towards the frozen MoDL ``teacher``); in DIRECT's units DIRECT's magnitude l2."""
    loss = "complex_mse_loss" if units == "paper" else "l2_loss"
    multiplier = journal_multiplier(lambda_l, size) if units == "paper" else lambda_l
    recon = [{"function": loss, "multiplier": 1.0}]
    ustab = [{"function": loss, "multiplier": multiplier}, {"function": "ustab_loss", "multiplier": 1.0}]
    published_rs_e2e = {}
    if units == "paper":
        published_rs_e2e = {"rs_e2e_dc_input": "clean"}
        if teacher is not None:
            published_rs_e2e |= {"rs_e2e_target": "teacher", "rs_e2e_teacher_checkpoint": teacher}
    checkpointing = {"gradient_checkpointing": size == "paper"}
    scale = intensity_units(units)
    clamp = {"clamp_noisy_input": True} if units == "paper" else {}
    return {
        "didn_pretrain": (
            {"model_name": "smug.didn.DIDN", **denoiser(size), "sigma": 0.01, "noise_seed": 0, **scale, **clamp},
            [{"function": "denoiser_loss", "multiplier": 1.0}],
        ),
        "modl": (unrolled(size, "smug.modl.MoDL", pretrained, **scale), recon),
        # The published MoDL baseline starts from random weights; `modl` starts from the pre-trained denoiser.
        "modl_scratch": (unrolled(size, "smug.modl.MoDL", None, **scale), recon),
        "smug": (
            unrolled(size, "smug.smug.SMUG", pretrained, **smoothing(size, units), **scale, **checkpointing),
            ustab,
        ),
        "weighted_smug": (
            unrolled(
                size,
                "smug.weighted_smug.WeightedSMUG",
                pretrained,
                **smoothing(size, units),
                weight_encoder_channels=16,
                weight_encoder_layers=5,
                **scale,
                **checkpointing,
            ),
            ustab,
        ),
        "rs_e2e": (
            unrolled(
                size,
                "smug.rs_e2e.RSE2E",
                pretrained,
                **smoothing(size, units),
                **scale,
                **checkpointing,
                **published_rs_e2e,
            ),
            recon,
        ),
        "varnet": (
            {"model_name": "varnet.varnet.EndToEndVarNet", "num_layers": 8 if size == "paper" else 5}
            | ({"regularizer_num_filters": 18} if size == "paper" else {"regularizer_num_filters": 8}),
            [{"function": "l1_loss", "multiplier": 1.0}, {"function": "ssim_loss", "multiplier": 1.0}],
        ),
        "rim": (
            {"model_name": "rim.rim.RIM", "hidden_channels": 64 if size == "paper" else 16, "length": 8}
            | {"depth": 2, "steps": 1, "no_parameter_sharing": False, "image_initialization": "sense"},
            [{"function": "l1_loss", "multiplier": 1.0}, {"function": "ssim_loss", "multiplier": 1.0}],
        ),
    }


def defended_native_models() -> dict[str, tuple[dict, list[dict]]]:
    """DIRECT's XPDNet and Recurrent-VarNet, CPU-sized for the bundled data (the defense study of `make beyond`, next
    to VarNet and RIM of :func:`models`): their losses, data and masks are VarNet's and RIM's."""
    losses = [{"function": "l1_loss", "multiplier": 1.0}, {"function": "ssim_loss", "multiplier": 1.0}]
    xpdnet = {"model_name": "xpdnet.xpdnet.XPDNet", "num_primal": 5, "num_dual": 1, "num_iter": 5}
    xpdnet |= {"use_primal_only": True, "mwcnn_hidden_channels": 8, "mwcnn_num_scales": 2, "mwcnn_bias": True}
    recurrent = {"model_name": "recurrentvarnet.recurrentvarnet.RecurrentVarNet", "num_steps": 5}
    recurrent |= {"recurrent_hidden_channels": 16, "recurrent_num_layers": 4, "no_parameter_sharing": False}
    recurrent |= {"learned_initializer": True, "initializer_initialization": "sense"}
    recurrent |= {"initializer_channels": [8, 8, 16, 16], "initializer_dilations": [1, 1, 2, 4]}
    return {"xpdnet": (xpdnet, losses), "recurrentvarnet": (recurrent, losses)}


# ----------------------------------------------------------------------------------------------- configs
def config(anatomy: str, size: str, model: dict, losses: list[dict], iterations: int, batch_size: int) -> dict:
    paper = size == "paper"
    validation_every = 5000 if paper else iterations
    return {
        "model": model,
        "physics": {"forward_operator": "fft2", "backward_operator": "ifft2"},
        "training": {
            "datasets": training_datasets(anatomy),
            "optimizer": PAPER_OPTIMIZER,
            "lr": 1e-4 if paper else 1e-3,
            "weight_decay": 0.0,
            "batch_size": batch_size,
            "lr_step_size": 10**9,  # constant learning rate, as published
            "lr_warmup_iter": 0 if paper else 20,
            "num_iterations": iterations,
            "validation_steps": validation_every,
            "gradient_clipping": 0.0 if paper else 1.0,
            "checkpointer": {"checkpoint_steps": validation_every},
            "loss": {"crop": None, "losses": losses},
        },
        "validation": {
            "datasets": validation_datasets(anatomy),
            "batch_size": 4,
            "crop": "header" if FASTMRI[anatomy]["crop"] else None,
            "metrics": METRICS,
        },
        "inference": {
            "batch_size": 4,
            "crop": "header" if FASTMRI[anatomy]["crop"] else None,
            "dataset": {"name": "FastMRI", "transforms": transforms(anatomy, *FASTMRI[anatomy]["accelerations"][0])},
        },
        "logging": {"tensorboard": {"num_images": 2}},
    }


DEMO_ITERATIONS = {"didn_pretrain": 300, "modl": 300, "smug": 300, "weighted_smug": 300, "rs_e2e": 150}
# lambda_l of the demo's SMUG models, journal-equivalent (journal_multiplier): the value `make reproduce` chose on the
# validation split (results/demo/lambda_l_choice.json); the papers' 1 cost 2.4 dB of clean PSNR there.
DEMO_LAMBDA_L = 100.0
# `make reproduce` (scripts/reproduce.py): the fine-tuned models get the same number of iterations; VarNet, RIM and
# MoDL from scratch, which have no pre-training, get more. Cut to fit the study's seeds into 2 hours on 2 cores.
REPRODUCE_ITERATIONS = {"didn_pretrain": 600, "varnet": 400, "rim": 400, "modl_scratch": 400}
# XPDNet and Recurrent-VarNet (trained by `make beyond` for the defense study) get VarNet's and RIM's iterations.
REPRODUCE_ITERATIONS |= {"xpdnet": 400, "recurrentvarnet": 400}
REPRODUCE_FINE_TUNING = 200
# The lambda_l frontier of the SMUG models, journal-equivalent; scripts/reproduce.py picks one on the validation
# split. The papers use lambda_l = 1.
REPRODUCE_LAMBDA_L = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
# The studies whose models run in the papers' units (intensity_scale: paper): every shipped one.
PAPER_UNITS = ("knee", "brain", "reproduce", "demo")
PAPER_ITERATIONS = {"didn_pretrain": 300_000}
# Adversarial training, the journal's baseline, in the evaluation's threat (the protocol `reproduce`'s `pgd`): l_inf
# k-space PGD with eps 0.02 x s_ref (the papers' units), steps of eps / 3 from a random start. 5 steps on every second
# batch: a MoDL step then costs about 3x a plain one (measured on the demo data, one thread).
ADVERSARIAL_TRAINING = {
    "adversarial_training_budget": 0.02,
    "adversarial_training_convention": "paper",
    "adversarial_training_norm": "linf",
    "adversarial_training_steps": 5,
    "adversarial_training_share": 0.5,
}


def iterations(study: str, name: str) -> int:
    if study == "demo":
        return DEMO_ITERATIONS.get(name, 300)
    if study == "reproduce":
        return REPRODUCE_ITERATIONS.get(name.split("_lambda")[0], REPRODUCE_FINE_TUNING)
    return PAPER_ITERATIONS.get(name, 1_000_000)


def last_checkpoint(study: str, name: str) -> str:
    """Where `direct train` leaves the last checkpoint of ``name`` (seed 0) in ``study``."""
    run = f"runs/{study}/{name}/{name}" if study in LOCAL else f"runs/{name}_{study}/{name}_{study}"
    return f"{run}/model_{iterations(study, name) - 1}.pt"


def pretrained_checkpoint(study: str) -> str:
    """Where `direct train` leaves the last pre-training checkpoint (it counts iterations from 0)."""
    run = (
        f"runs/{study}/didn_pretrain/didn_pretrain"
        if study in LOCAL
        else f"runs/didn_pretrain_{study}/didn_pretrain_{study}"
    )
    return f"{run}/model_{iterations(study, 'didn_pretrain') - 1}.pt"


LOCAL = ("demo", "reproduce")  # studies on the bundled data, trained on the CPU


def command(study: str, name: str) -> str:
    if study in LOCAL:
        return (
            f"direct train runs/{study}/{name} --cfg projects/{study}/{name}.yaml --training-root data/demo/train "
            "--validation-root data/demo/val --device cpu --num-workers 0"
        )
    return (
        f"direct train runs/{name}_{study} --cfg projects/{name}_{study}.yaml "
        f"--training-root .../multicoil_train --validation-root .../multicoil_val --device cuda"
    )


def study_units(study: str) -> str:
    return "paper" if study in PAPER_UNITS else "direct"


def study_models(study: str) -> dict[str, tuple[dict, list[dict]]]:
    size = "demo" if study in LOCAL else "paper"
    units = study_units(study)
    teacher = last_checkpoint(study, "modl")
    if study == "demo":
        return models(size, pretrained_checkpoint(study), DEMO_LAMBDA_L, units, teacher)
    if study != "reproduce":
        return models(size, pretrained_checkpoint(study), units=units, teacher=teacher)
    selected = {}
    # MoDL dividing by a robust statistic of A^H y (the 99th percentile of its modulus) instead of the papers' max:
    # the study compares the two under the normalisation attack.
    modl, recon = models(size, pretrained_checkpoint(study), 1.0, units, teacher)["modl"]
    selected["modl_quantile"] = ({**modl, "intensity_scale_statistic": "quantile"}, recon)
    for lambda_l in REPRODUCE_LAMBDA_L:
        for name, entry in models(size, pretrained_checkpoint(study), lambda_l, units, teacher).items():
            if name in ("smug", "weighted_smug"):
                selected[f"{name}_lambda{lambda_l:g}"] = entry
            else:
                selected[name] = entry
    # The adversarially trained baselines: MoDL, and SMUG at the demo's lambda_l.
    smug, ustab = models(size, pretrained_checkpoint(study), DEMO_LAMBDA_L, units, teacher)["smug"]
    selected["modl_adversarial"] = ({**modl, **ADVERSARIAL_TRAINING}, recon)
    selected["smug_adversarial"] = ({**smug, **ADVERSARIAL_TRAINING}, ustab)
    return selected | defended_native_models()


def units_comment(study: str, model: dict) -> list[str]:
    """The header lines that say what the model's numbers mean."""
    if study_units(study) == "direct":
        return [
            "# Units: DIRECT's (k-space / 99th percentile of |masked k-space|). Image maxima are 3.75-6.15 there on",
            "# the demo data at 4x, so sigma 0.01 is 0.16-0.27 % of the image maximum (results/demo/units_table.txt);",
            "# the papers' 1 % is intensity_scale: paper.",
        ]
    if model["model_name"] == "smug.didn.DIDN":
        return [
            "# Units: intensity_scale paper: each target is divided by its s = max(|Re|, |Im|) (fully sampled, the",
            "# papers' definition) before the noise: sigma 0.01 is 1 % of s; noisy inputs are clamped to [-1, 1] of s.",
        ]
    if model.get("intensity_scale_statistic") == "quantile":
        return [
            "# Units: intensity_scale paper, intensity_scale_statistic quantile: each slice runs divided by the",
            "# 99th percentile of |A^H y| (not the papers' max), which one bright pixel cannot move.",
        ]
    lines = [
        "# Units: intensity_scale paper: each slice runs divided by s = max(|Re|, |Im|) of its A^H y and the output is",
        "# multiplied back. The papers' s is that of the fully sampled image: 1.07-1.44 times this one on the demo",
        "# data at 4x (median 1.19, results/demo/units_table.txt).",
    ]
    if "sigma" in model:
        lines.append("# sigma 0.01 is 1 % of s; noisy inputs are clamped to [-1, 1] of s, widened to the image range.")
    return lines


def lambda_comment(name: str, size: str) -> list[str]:
    """What the reconstruction multiplier of a lambda_l frontier point means."""
    lambda_l = float(name.rsplit("_lambda", 1)[1])
    return [
        f"# lambda_l = {lambda_l:g}, journal-equivalent (the papers' value is 1): the complex-MSE multiplier next to",
        f"# UStab is {journal_multiplier(lambda_l, size):g} = lambda_l x {UNROLLS[size]} unroll terms / the journal's"
        " 8.",
        "# scripts/reproduce.py picks one point of the frontier on the validation split.",
    ]


def all_projects() -> dict[pathlib.Path, str]:
    files = {}
    for study in ("knee", "brain", "demo", "reproduce"):
        size = "demo" if study in LOCAL else "paper"
        for name, (model, losses) in study_models(study).items():
            body = config(
                "demo" if study in LOCAL else study, size, copy.deepcopy(model), losses, iterations(study, name), 2
            )
            path = f"projects/{study}/{name}.yaml" if study in LOCAL else f"projects/{name}_{study}.yaml"
            data = "the bundled Colin27 demo data" if study in LOCAL else f"fastMRI {study}"
            header = [
                f"# {name} on {data} - generated by scripts/generate_projects.py: edit there.",
                f"# {command(study, name)}",
            ]
            if model.get("denoiser_checkpoint"):
                header.append("# denoiser_checkpoint: the pre-training run (didn_pretrain) must have finished first.")
            elif name == "modl_scratch":
                header.append("# MoDL from random weights as published (modl.yaml: from the pre-trained denoiser).")
            if str(model["model_name"]).startswith("smug."):
                header += units_comment(study, model)
            if "_lambda" in name:
                header += lambda_comment(name, size)
            elif study in LOCAL and any(loss["function"] == "ustab_loss" for loss in losses):
                header.append(
                    f"# lambda_l = {DEMO_LAMBDA_L:g} (journal-equivalent), the value `make reproduce` chose on the "
                    "validation split."
                )
            if model.get("adversarial_training_budget"):
                header += [
                    "# Adversarial training: l_inf k-space PGD, eps 0.02 x s_ref (paper convention, the evaluation's),"
                    f" {model['adversarial_training_steps']} steps,",
                    f"# on {model['adversarial_training_share']:g} of the training batches: about 3x the time of a "
                    "plain MoDL step.",
                ]
            if model.get("rs_e2e_target") == "teacher":
                header.append("# rs_e2e_teacher_checkpoint: the MoDL run (modl) must have finished first.")
            files[ROOT / path] = "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False, width=120)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that projects/ is up to date")
    args = parser.parse_args()
    stale = []
    for path, text in all_projects().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"out of date (run python scripts/generate_projects.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
