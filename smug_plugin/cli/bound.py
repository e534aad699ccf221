"""``smug bound``: SMUG's Theorem 1 (journal) for trained models, next to the ratio an attack measured.

||A|| and alpha by power iteration on each slice's operator, M from the denoiser outputs on the slices, C_n for
n = 1..N; the measured ||f(y + delta) - f(y)|| / ||delta|| comes from the records of a ``smug evaluate`` run of the
same models on the same data (``--evaluation``).
"""

import argparse
import pathlib

from smug_plugin.cli.foundation import run_command


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bound",
        help="SMUG's Theorem 1 constants C_n for trained models, next to the measured attack ratio.",
        description=(
            "Estimates ||A|| and alpha = ||(A^H A + lambda I)^{-1}|| by power iteration on every slice's operator, "
            "M (empirical) from the denoiser's outputs on the slices, and the Theorem 1 constants C_n, n = 1..N; "
            "with --evaluation, puts them next to ||f(y + delta) - f(y)|| / ||delta|| of that smug evaluate run. "
            "Writes bound.json, bound.md and bound.png to --output-dir."
        ),
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=CONFIG.yaml:CHECKPOINT.pt",
        help="A smoothed plugin model (repeatable): display name, its DIRECT YAML and checkpoint.",
    )
    parser.add_argument("--data-root", required=True, type=pathlib.Path, help="Directory of fastMRI-format h5 files.")
    parser.add_argument(
        "--output-dir", required=True, type=pathlib.Path, help="Folder for bound.md/.json and the figure (locked)."
    )
    parser.add_argument(
        "--evaluation", type=pathlib.Path, default=None, help="Output folder of smug evaluate on the same models."
    )
    parser.add_argument("--perturbation", default="pgd", help="The perturbation of --evaluation to compare with.")
    parser.add_argument("--power-iterations", type=int, default=50, help="Power iterations for ||A|| and alpha.")
    parser.add_argument("--max-slices", type=int, default=None, help="Use only the first N slices.")
    parser.add_argument("--batch-size", type=int, default=4, help="Slices processed at once.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return run_command("bound", compute_bound, args, own_check=read_measured)


def read_measured(args: argparse.Namespace):
    """The ``--evaluation`` folder (a finished run that holds ``--perturbation``), None without one."""
    from smug_plugin.robustness.run.run_identity import read_evaluation

    if args.evaluation is None:
        return None
    evaluation = read_evaluation(args.evaluation, "--evaluation")
    if evaluation.perturbation(args.perturbation) is None:
        names = ", ".join(p["name"] for p in evaluation.manifest["protocol"]["perturbations"])
        raise ValueError(
            f"--evaluation {args.evaluation} has no perturbation '{args.perturbation}' (it has {names}): "
            "name one of them with --perturbation."
        )
    return evaluation


def measured_ratios(evaluation, perturbation: str) -> dict[str, dict[tuple[str, int], float]]:
    """``{model: {(file, slice): ratio}}`` of the main condition ``perturbation`` of a finished evaluation."""
    import math

    ratios: dict[str, dict[tuple[str, int], float]] = {}
    for r in evaluation.records:
        ratio = r.get("rob_ratio")
        if r["condition"] == f"main/{perturbation}" and ratio is not None and math.isfinite(ratio):
            ratios.setdefault(r["model"], {})[(r["file"], r["slice"])] = ratio
    if not ratios:
        raise ValueError(
            f"--evaluation {evaluation.folder} holds no records of perturbation '{perturbation}' with a nonzero "
            "delta; name one of its perturbations with --perturbation."
        )
    return ratios


def check_same_run(evaluation, models: list, data_root: pathlib.Path) -> None:
    """Refuse an evaluation of other data, or of a model of the same name with other weights or settings: its
    measured ratio would stand beside another model's constants."""
    from smug_plugin.robustness.run.run_identity import data_identity, model_identity

    where = f"--evaluation {evaluation.folder}"
    if evaluation.manifest.get("data_files") != data_identity(data_root):
        raise ValueError(
            f"{where} evaluated other data ({evaluation.manifest.get('data_root')}) than --data-root {data_root} "
            "(h5 file names or sizes differ): give the data root of that run."
        )
    if all(evaluation.model(model.name) is None for model in models):
        theirs = ", ".join(m.get("name", "?") for m in evaluation.manifest["models"]) or "none"
        raise ValueError(
            f"{where} evaluated none of the models {', '.join(m.name for m in models)} (it has {theirs}): "
            "give each --model the name it has there."
        )
    for model in models:
        theirs, mine = evaluation.model(model.name), model_identity(model)
        if theirs is None:
            continue  # no measured ratio: reported as n/a
        differences = [
            f"{key} {theirs.get(key)} there, {mine[key]} here"
            for key in ("ckpt_sha", "settings", "described")
            if theirs.get(key) != mine[key]
        ]
        if differences:
            raise ValueError(
                f"{where}: its model '{model.name}' is not this one ({'; '.join(differences)}): evaluate these models "
                "with smug evaluate, or give them the names they have there."
            )


def model_facts(model, scope: str | None) -> dict:
    """Name, why the theorem does not apply (None: it does) and the settings it uses."""
    facts = {"name": model.name, "scope": scope, "lambda": None, "sigma": None, "num_steps": None}
    module = model.module
    if hasattr(module, "lambd"):
        facts |= {"lambda": float(module.lambd.detach().float().clamp_min(1e-6)), "num_steps": module.num_steps}
        facts |= {"sigma": float(module.sigma), "num_samples": module.num_samples}
    return facts


def compute_bound(args: argparse.Namespace, inputs) -> dict:
    """Load models and data, estimate the constants per slice, write the report; returns the written paths."""
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor
    from smug_plugin.robustness.reports.bound_report import model_summary, write_bound_report
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch
    from smug_plugin.robustness.studies.bound import denoiser_output_norms, operator_norms, theorem_scope

    specs = inputs.specs
    cs = [s.name for s in specs if not isinstance(s, ModelSpec)]
    if cs:
        raise ValueError(f"--model {cs[0]}: smug bound needs a DIRECT model (NAME=CONFIG.yaml:CHECKPOINT.pt).")
    evaluation = inputs.own
    models = [load_reconstructor(spec, "cpu", args.output_dir / "direct_logs") for spec in specs]
    measured = {}
    if evaluation is not None:
        check_same_run(evaluation, models, args.data_root)
        measured = measured_ratios(evaluation, args.perturbation)
    scopes = {m.name: theorem_scope(m) for m in models}
    dataset = build_dataset(models[0], args.data_root, None, None)
    for model in models:
        model.use_dimensionality(dataset.ndim)
    slices: dict[str, list[dict]] = {m.name: [] for m in models}
    for _, indices in iterate_batches(models[0], dataset, args.batch_size, args.max_slices):
        batch = load_batch(dataset, indices, "cpu")
        for model in models:
            facts = model_facts(model, scopes[model.name])
            operator = model.operator(batch)
            like = operator.adjoint(batch["masked_kspace"])
            norms = operator_norms(operator, facts["lambda"] or 1.0, like, args.power_iterations)
            d_norms = denoiser_output_norms(model, batch) if scopes[model.name] is None else None
            for i, (file, number) in enumerate(zip(batch["filename"], batch["slice_no"])):
                slices[model.name].append(
                    {
                        "file": pathlib.Path(file).name,
                        "slice": int(number),
                        "a_norm": float(norms.a_norm[i]),
                        "alpha": float(norms.alpha[i]),
                        "denoiser_norm": None if d_norms is None else float(d_norms[i]),
                    }
                )
    rows = [model_summary(model_facts(m, scopes[m.name]), slices[m.name], measured.get(m.name, {})) for m in models]
    facts = {
        "data_root": str(args.data_root),
        "slices": len(slices[models[0].name]),
        "evaluation": None if args.evaluation is None else str(args.evaluation),
        "perturbation": args.perturbation if args.evaluation is not None else None,
        "power_iterations": args.power_iterations,
        "data_issues": inputs.data_issues,
    }
    return write_bound_report(args.output_dir, rows, facts)
