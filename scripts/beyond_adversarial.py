"""Adversarial training as the baseline of the SMUG journal's claims, a step of `make beyond` (scripts/beyond.py).

The journal states that adversarial training resists the worst-case attack but degrades under sampling-rate and
unroll-count shifts and costs much more to train. This step measures both claims on the bundled data:

1. trains ``projects/reproduce/{modl,smug}_adversarial.yaml`` (the evaluation's k-space PGD inside ``direct train``:
   l_inf, eps 0.02 in paper units, 5 steps, half of the batches) with the study's three seeds, next to the study's
   MoDL and SMUG (``make reproduce``), the same data, masks, iterations and networks;
2. evaluates them on the 12 test slices: clean, the journal's PGD, and clean under
   the acceleration (2x, 8x; trained at 4x) and unroll-count (1, 16; trained with 5) shifts;
3. writes ``adversarial/adversarial.md`` and ``.json`` (every kind against MoDL and against SMUG, paired 95 %
   two-level bootstrap intervals over seeds x slices, in dB) and ``adversarial.png``; the training-time multiple comes
   from ``benchmarks/adversarial_training_cost.py`` (one run, the four kinds back to back on one thread), whose output
   this step also writes.

    python scripts/beyond_adversarial.py --results results/demo/beyond   # after make reproduce; or via beyond.py
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import reproduce
from reproduce import Training
from study_analysis import matrices

from smug_plugin.robustness.reports.paired import paired_difference

ROOT = reproduce.ROOT
KINDS = {  # display name -> project of projects/reproduce
    "MoDL": "modl",
    "SMUG": "smug_lambda{lam}",
    "MoDL (adversarial)": "modl_adversarial",
    "SMUG (adversarial)": "smug_adversarial",
}
# The study's three training seeds, as MoDL and SMUG: the intervals then cover seeds x slices for every kind (a SMUG
# one took 12 min of one thread on this 2-core machine, next to another step).
ADVERSARIAL_SEEDS = reproduce.SEEDS
ADVERSARIAL = [
    Training(project, seed) for seed in ADVERSARIAL_SEEDS for project in ("modl_adversarial", "smug_adversarial")
]
CONDITIONS = {  # condition id of `smug evaluate` -> column title
    "main/clean": "clean",
    "main/pgd": "PGD",
    "acceleration=2/clean": "clean, 2x",
    "acceleration=8/clean": "clean, 8x",
    "unrolls=1/clean": "clean, 1 unroll",
    "unrolls=16/clean": "clean, 16 unrolls",
}
REFERENCES = ("MoDL", "SMUG")
PROTOCOL = """\
# Adversarial training against MoDL and SMUG (scripts/beyond_adversarial.py): the journal's PGD and its test-time
# shifts. Threat model: the attacker perturbs the measured k-space; every normalisation is fixed from the clean
# measurement. Units: budget convention paper = a fraction of s_ref (the journal's eps 0.02 per real/imaginary entry).
name: beyond-adversarial
seed: 0
threat_model:
  normalisation: fixed
perturbations:
  - {name: clean, kind: clean}
  - name: pgd
    kind: pgd
    norm: linf
    domain: kspace
    budget: {value: 0.02, convention: paper}
    steps: 10
    step_fraction: 0.3333333333
    random_start: true
    target: ground_truth
sweeps:
  acceleration:
    values: [2, 4, 8]
    center_fraction_product: 0.32
    perturbations: [clean]
  unrolls:
    values: [1, 5, 16]
    perturbations: [clean]
"""


def model_arguments(runs: pathlib.Path, lam: str) -> list[str]:
    """``--model NAME s<seed>=CONFIG:CHECKPOINT`` of the four kinds (MoDL and SMUG: three seeds)."""
    arguments = []
    for display, project in KINDS.items():
        project = project.format(lam=lam)
        for seed in ADVERSARIAL_SEEDS if "adversarial" in project else reproduce.SEEDS:
            job = Training(project, seed)
            checkpoint = reproduce.checkpoint(runs, job).relative_to(ROOT)
            arguments += ["--model", f"{display} s{seed}=projects/reproduce/{project}.yaml:{checkpoint}"]
    return arguments


def analyse(robustness: dict) -> dict:
    """Per kind and condition: mean PSNR, seed means, and the paired difference to MoDL and to SMUG (dB)."""
    data, keys = matrices(robustness["records"], CONDITIONS)
    summary: dict = {"slices": len(keys), "conditions": list(CONDITIONS.values()), "kinds": {}}
    for kind in KINDS:
        entry: dict = {}
        for condition, title in CONDITIONS.items():
            values = data.get(condition, {}).get(kind)
            if values is None:
                continue
            seed_means = values.mean(axis=1)
            cell = {"mean": float(values.mean()), "seed_means": [float(v) for v in seed_means]}
            cell["seed_sd"] = float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None
            for reference in REFERENCES:
                other = data[condition].get(reference)
                if reference != kind and other is not None:
                    cell[f"vs {reference}"] = paired_difference(values, other).to_dict()
            entry[title] = cell
        summary["kinds"][kind] = entry
    return summary


def cell_text(cell: dict | None) -> str:
    if cell is None:
        return "n/a"
    return f"{cell['mean']:.2f}" + (f" ({cell['seed_sd']:.2f})" if cell.get("seed_sd") is not None else "")


def fmt(cell: dict | None) -> str:
    if cell is None:
        return "n/a"
    return f"{cell['mean']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}]"


def markdown(summary: dict, cost: str, command: str) -> str:
    titles = summary["conditions"]
    lines = [
        "# Adversarial training against MoDL and SMUG",
        "",
        f"`{command}` (`make beyond`), {summary['slices']} test slices; MoDL and SMUG with the study's 3 "
        f"training seeds, the adversarially trained models with {len(ADVERSARIAL_SEEDS)}; every interval covers "
        "seeds x slices. Threat model: the attacker perturbs the measured k-space, every normalisation fixed from the "
        "clean measurement. PGD: l_inf, eps 0.02 x s_ref per real/imaginary k-space entry (paper units), 10 steps. "
        "Adversarial training: the same PGD with 5 steps on half of the training batches "
        "(projects/reproduce/*_adversarial.yaml). Shifts: clean "
        "reconstructions at 2x and 8x (trained at 4x) and with 1 and 16 unrolls (trained with 5).",
        "",
        "## PSNR (dB), mean over seeds and slices (seed-to-seed SD of the seed means in brackets)",
        "",
        "| model | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(titles),
    ]
    for kind, entry in summary["kinds"].items():
        lines.append(f"| {kind} | " + " | ".join(cell_text(entry.get(t)) for t in titles) + " |")
    for reference in REFERENCES:
        lines += [
            "",
            f"## Difference to {reference} (dB), paired 95 % two-level bootstrap over seeds x slices",
            "",
            "| model | " + " | ".join(titles) + " |",
            "|---|" + "---|" * len(titles),
        ]
        for kind, entry in summary["kinds"].items():
            if kind == reference:
                continue
            lines.append(
                f"| {kind} | " + " | ".join(fmt(entry.get(t, {}).get(f"vs {reference}")) for t in titles) + " |"
            )
    lines += ["", "## Training time", "", "```", cost.strip(), "```", ""]
    return "\n".join(lines)


def write_figure(summary: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = summary["conditions"]
    kinds = list(summary["kinds"])
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        entry = summary["kinds"][kind]
        x = np.arange(len(titles)) + (i - (len(kinds) - 1) / 2) * width
        means = [entry[t]["mean"] if t in entry else np.nan for t in titles]
        ax.bar(x, means, width, label=kind)
        for xi, t in zip(x, titles, strict=True):
            if t in entry:
                seeds = entry[t]["seed_means"]
                ax.plot([xi] * len(seeds), seeds, "k.", markersize=3)
    ax.set_xticks(np.arange(len(titles)), titles)
    ax.set_ylabel("PSNR (dB), mean over 12 test slices")
    ax.set_title("Adversarial training vs MoDL and SMUG (bars: mean over seeds; dots: each seed)")
    low = min(min(c["seed_means"]) for e in summary["kinds"].values() for c in e.values())
    ax.set_ylim(low - 2, None)
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def chosen_lambda_l() -> str:
    """The study's lambda_l (its SMUG project is smug_lambda<lambda_l>)."""
    return f"{json.loads((ROOT / 'results' / 'demo' / 'lambda_l_choice.json').read_text())['chosen']:g}"


def training_cost(study) -> dict:
    """The cost benchmark (one run, the four kinds back to back on one thread): a step of scripts/beyond.py's Study."""
    output = study.results / "adversarial"
    output.mkdir(parents=True, exist_ok=True)
    cost_file = output / "training_cost.txt"
    command = [sys.executable, "benchmarks/adversarial_training_cost.py", "--iterations", "40"]
    command += ["--output", reproduce_relative(cost_file)]
    return study.step("adversarial training cost", command, cost_file)


def evaluate_and_report(study, runs: pathlib.Path, lam: str) -> dict:
    """The evaluation of the four kinds and the report, once the trainings (ADVERSARIAL) are done."""
    protocol = study.write_input("adversarial_protocol.yaml", PROTOCOL)
    evaluation = study.evaluate(
        "adversarial_evaluation", model_arguments(runs, lam), protocol, reproduce.DATA / "test", batch_size=4
    )
    report(study.results)
    return evaluation


def reproduce_relative(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report(results: pathlib.Path) -> dict:
    robustness = json.loads((results / "adversarial_evaluation" / "robustness.json").read_text())
    summary = analyse(robustness)
    output = results / "adversarial"
    output.mkdir(parents=True, exist_ok=True)
    cost_file = output / "training_cost.txt"
    cost = (
        cost_file.read_text() if cost_file.exists() else "(not measured: run benchmarks/adversarial_training_cost.py)"
    )
    command = "python scripts/beyond_adversarial.py --results " + reproduce_relative(results)
    (output / "adversarial.json").write_text(json.dumps(summary, indent=1) + "\n")
    (output / "adversarial.md").write_text(markdown(summary, cost, command))
    write_figure(summary, output / "adversarial.png")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=pathlib.Path, default=ROOT / "results" / "demo" / "beyond")
    parser.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the evaluation")
    args = parser.parse_args()
    if args.report_only:
        summary = report(args.results.absolute())
        print(json.dumps({k: {t: round(c["mean"], 2) for t, c in e.items()} for k, e in summary["kinds"].items()}))
        return 0
    import beyond

    results = args.results.absolute()
    runs = args.runs.absolute()
    study = beyond.Study(runs, results, threads=1)
    records = reproduce.train_all(runs, ADVERSARIAL, {}, 1)  # one at a time; beyond.py runs them in its pool
    records += [training_cost(study), evaluate_and_report(study, runs, chosen_lambda_l())]
    print(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
