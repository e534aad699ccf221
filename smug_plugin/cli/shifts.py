"""``smug shifts``: out-of-distribution against in-distribution accuracy per model, from `smug evaluate` runs."""

import argparse
import pathlib

from smug_plugin.cli.foundation import run_command


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "shifts",
        help="Distribution shifts: OOD against ID accuracy per model with the linear fit, from smug evaluate runs.",
        description=(
            "Reads the records of a smug evaluate run on in-distribution data (--in-distribution) and of runs of the "
            "same models on shifted data (--shifted NAME=DIR), adds the adversarially filtered set (the hardest "
            "--fraction of the in-distribution slices for --filter-model, which is then left out of the table), and "
            "writes shifts.json, shifts.md and shifts.png (OOD against ID per model, a linear fit per set)."
        ),
    )
    parser.add_argument("--in-distribution", required=True, type=pathlib.Path, help="smug evaluate output folder.")
    parser.add_argument("--shifted", action="append", default=[], metavar="NAME=DIR", help="A shifted set's run.")
    parser.add_argument("--filter-model", default=None, help="The model that picks the hardest slices.")
    parser.add_argument("--fraction", type=float, default=0.1, help="The filtered fraction (default: 10 %%).")
    parser.add_argument("--perturbation", default="clean", help="The main condition compared (default: clean).")
    parser.add_argument(
        "--metric", default="psnr", choices=["psnr", "ssim", "nmse"], help="Metric compared across the sets."
    )
    parser.add_argument("--output-dir", required=True, type=pathlib.Path, help="Folder for shifts.md/.json (locked).")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return run_command("shifts", report, args, own_check=read_runs)


def read_runs(args: argparse.Namespace) -> dict:
    """``{set: Evaluation}``, the in-distribution run first, each finished and comparable with it (see
    `check_comparable`)."""
    from smug_plugin.robustness.run.run_identity import read_evaluation
    from smug_plugin.robustness.studies.shifts import FILTERED

    if not 0 < args.fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}.")
    if not args.shifted and args.filter_model is None:
        raise ValueError("Nothing to compare: give a shifted set's run with --shifted NAME=DIR, or --filter-model.")
    runs = {IN_DISTRIBUTION: read_evaluation(args.in_distribution, "--in-distribution")}
    for entry in args.shifted:
        name, sep, folder = entry.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"Expected --shifted NAME=DIR, got '{entry}'.")
        if name in runs or name == FILTERED:
            raise ValueError(f"--shifted {entry}: the set name '{name}' is taken; give every shifted set its own name.")
        runs[name] = read_evaluation(pathlib.Path(folder), f"--shifted {name}:")
    check_comparable(runs, args.perturbation)
    return runs


IN_DISTRIBUTION = "in distribution"


def check_comparable(runs: dict, perturbation: str) -> None:
    """Refuse runs whose perturbation ``perturbation`` differs from the in-distribution run's (another budget under
    one name), or whose models of one name differ (other weights or settings)."""
    reference = runs[IN_DISTRIBUTION]
    for name, run in runs.items():
        where = f"{run.folder} ({name})"
        spec = run.perturbation(perturbation)
        if spec is None:
            raise ValueError(f"{where} has no perturbation '{perturbation}': choose a common one with --perturbation.")
        if spec != reference.perturbation(perturbation):
            differs = sorted(k for k in spec if spec.get(k) != reference.perturbation(perturbation).get(k))
            raise ValueError(
                f"{where}: perturbation '{perturbation}' is not the one of {reference.folder} (they differ in "
                f"{', '.join(differs)}): compare runs of one protocol."
            )
        for model in run.manifest["models"]:
            theirs = reference.model(model["name"])
            if theirs is None:
                continue
            differs = [k for k in ("ckpt_sha", "settings", "described") if model.get(k) != theirs.get(k)]
            if differs:
                raise ValueError(
                    f"{where}: model '{model['name']}' is not the one of {reference.folder} (other {', '.join(differs)}"
                    "): evaluate the same models on every set."
                )


def _values(run, condition: str, metric: str) -> dict:
    from smug_plugin.robustness.studies.shifts import slice_values

    values = slice_values(run.records, condition, metric)
    if not values:
        raise ValueError(f"{run.folder} holds no '{condition}' records with a finite {metric}.")
    return values


def report(args: argparse.Namespace, inputs) -> dict:
    import json

    from smug_plugin.atomic import atomic_write_text
    from smug_plugin.robustness.reports.tables import json_ready
    from smug_plugin.robustness.studies.shifts import shift_table

    runs = inputs.own
    condition = f"main/{args.perturbation}"
    values = {name: _values(run, condition, args.metric) for name, run in runs.items()}
    in_distribution = values.pop(IN_DISTRIBUTION)
    table = shift_table(in_distribution, values, args.filter_model, args.fraction)
    paths = {"json": args.output_dir / "shifts.json", "markdown": args.output_dir / "shifts.md"}
    atomic_write_text(paths["json"], json.dumps(json_ready({"metric": args.metric, **table}), indent=2))
    atomic_write_text(paths["markdown"], markdown(table, args))
    paths["figure"] = args.output_dir / "shifts.png"
    figure(paths["figure"], table, args.metric)
    return paths


def markdown(table: dict, args: argparse.Namespace) -> str:
    def cell(value):
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        "# Distribution shifts",
        "",
        f"Mean {args.metric} per model under `{args.perturbation}`: in distribution (`{args.in_distribution}`) and on "
        "each shifted set; the fit is OOD = slope x ID + intercept over the models.",
        "",
        "| Model | in distribution | " + " | ".join(table["sets"]) + " |",
        "|---|---|" + "---|" * len(table["sets"]),
    ]
    for row in table["rows"]:
        lines.append(
            f"| {row['model']} | {cell(row['in_distribution'])} | "
            + " | ".join(cell(row[s]) for s in table["sets"])
            + " |"
        )
    lines.append("")
    for name, fit in table["fits"].items():
        text = (
            "n/a (fewer than two models)"
            if fit is None
            else f"slope {fit['slope']:.3f}, intercept {fit['intercept']:.3f}"
        )
        lines.append(f"- {name}: {text}")
    if table["filter_model"] is not None:
        lines.append(
            f"- adversarially filtered: the hardest {table['fraction']:.0%} of the in-distribution slices for "
            f"{table['filter_model']} (not in the table)."
        )
    return "\n".join(lines) + "\n"


def figure(path: pathlib.Path, table: dict, metric: str) -> None:
    """OOD against ID, a point per model and set, the fit per set and the line y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smug_plugin.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    ids = [r["in_distribution"] for r in table["rows"]]
    for i, name in enumerate(table["sets"]):
        points = [(r["in_distribution"], r[name], r["model"]) for r in table["rows"] if r[name] is not None]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=f"C{i}", label=name)
        for x, y, model in points:
            ax.annotate(model, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        fit = table["fits"][name]
        if fit is not None:
            xs = [min(ids), max(ids)]
            ax.plot(xs, [fit["slope"] * x + fit["intercept"] for x in xs], color=f"C{i}", linewidth=1)
    ax.plot([min(ids), max(ids)], [min(ids), max(ids)], "k--", linewidth=0.8, label="y = x")
    ax.set_xlabel(f"in-distribution {metric}")
    ax.set_ylabel(f"shifted {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
