"""The study of `make reproduce`: every model and seed against MoDL, paired over seeds x test slices.

    python scripts/study_analysis.py --results results/demo

Reads robustness.json (`smug evaluate`), models.json (display name -> project and training seed) and
lambda_l_choice.json in the results folder; writes study.md, study_summary.json, clean_vs_pgd.png and paired_pgd.png
there. Differences are model - MoDL in dB with a 95 % two-level bootstrap interval
(`smug_plugin.robustness.reports.paired`); a one-seed model is compared with MoDL's seed mean per slice.
"""

import argparse
import json
import pathlib
import re
import statistics
from collections import defaultdict

import numpy as np

from smug_plugin.robustness.reports.paired import paired_difference

REFERENCE = "MoDL"
CONDITIONS = {  # condition id -> column title
    "main/clean": "clean",
    "main/noise": "noise",
    "main/pgd": "PGD",
    "main/pgd_normalisation": "PGD, normalisation attacked",
    "main/pgd_2023": "2023 protocol",
    # The journal's test-time shifts, clean: more unrolls than trained (5), a higher acceleration than trained (4x).
    "unrolls=16/clean": "clean, 16 unrolls",
    "acceleration=8/clean": "clean, 8x",
}
EPS_UNIT = "eps 0.02 x s_ref per real/imaginary k-space entry (paper units)"


def group_and_seed(display: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.*) s(\d+)", display)
    if match is None:
        raise ValueError(f"model name {display!r} does not end in ' s<seed>'")
    return match.group(1), int(match.group(2))


def matrices(records: list[dict], conditions: dict | None = None) -> tuple[dict, list]:
    """{condition: {group: array (seeds, slices)}} in seed order, and the slice keys (file, slice), of the records of
    ``conditions`` (default: the study's)."""
    conditions = CONDITIONS if conditions is None else conditions
    cells: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["condition"] in conditions and r.get("psnr") is not None:
            group, seed = group_and_seed(r["model"])
            cells[r["condition"]][group].setdefault(seed, {})[(r["file"], r["slice"])] = r["psnr"]
    keys = sorted({k for by_group in cells.values() for seeds in by_group.values() for s in seeds.values() for k in s})
    out = {
        condition: {
            group: np.array([[seeds[s][k] for k in keys] for s in sorted(seeds)]) for group, seeds in by_group.items()
        }
        for condition, by_group in cells.items()
    }
    return out, keys


def fmt(d: dict) -> str:
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def analyse(results: pathlib.Path) -> dict:
    doc = json.loads((results / "robustness.json").read_text())
    choice = json.loads((results / "lambda_l_choice.json").read_text())
    data, keys = matrices(doc["records"])
    groups = list(dict.fromkeys(group_and_seed(m["name"])[0] for m in doc["models"]))
    summary: dict = {"slices": len(keys), "groups": {}, "lambda_l": choice}
    shifts: dict = defaultdict(list)
    for r in doc["records"]:
        if r["condition"] == "main/pgd_normalisation" and r.get("normalisation_shift") is not None:
            shifts[group_and_seed(r["model"])[0]].append(r["normalisation_shift"])
    for group in groups:
        entry: dict = {"conditions": {}, "vs_modl": {}}
        for condition, title in CONDITIONS.items():
            values = data.get(condition, {}).get(group)
            if values is None:
                continue
            seed_means = values.mean(axis=1)
            entry["seeds"] = int(values.shape[0])
            entry["conditions"][title] = {
                "mean": float(values.mean()),
                "seed_sd": float(statistics.stdev(seed_means)) if len(seed_means) > 1 else None,
                "slice_min": float(values.min()),
                "slice_max": float(values.max()),
                "seed_means": [float(v) for v in seed_means],
            }
            reference = data[condition].get(REFERENCE)
            if group != REFERENCE and reference is not None:
                entry["vs_modl"][title] = paired_difference(values, reference).to_dict()
        pgd, attacked = data.get("main/pgd", {}).get(group), data.get("main/pgd_normalisation", {}).get(group)
        if pgd is not None and attacked is not None:
            entry["normalisation_attack"] = paired_difference(attacked, pgd).to_dict()
            entry["normalisation_shift_max"] = max(shifts[group], default=None)
        summary["groups"][group] = entry
    return summary


def frontier(summary: dict) -> list[tuple[float, float, float]]:
    """(lambda_l, clean, PGD) of seed 0 along the lambda_l frontier, the chosen point included."""
    chosen = f"{summary['lambda_l']['chosen']:g}"
    points = []
    for group, entry in summary["groups"].items():
        match = re.fullmatch(r"SMUG lambda_l (\S+)", group)
        lam = match.group(1) if match else (chosen if group == "SMUG" else None)
        if lam is not None and "PGD" in entry["conditions"]:
            c = entry["conditions"]
            points.append((float(lam), c["clean"]["seed_means"][0], c["PGD"]["seed_means"][0]))
    return sorted(points)


def write_figures(results: pathlib.Path, summary: dict, data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    plotted = [
        g for g, e in summary["groups"].items() if "PGD" in e["conditions"] and not g.startswith("SMUG lambda_l")
    ]
    for i, group in enumerate(plotted):
        c = summary["groups"][group]["conditions"]
        marker = "osD^vP*X"[i % 8]
        ax.scatter(
            c["clean"]["seed_means"],
            c["PGD"]["seed_means"],
            label=group,
            color=plt.cm.tab10(i % 10),
            marker=marker,
            s=40,
        )
    points = frontier(summary)
    if points:
        ax.plot([p[1] for p in points], [p[2] for p in points], "k--", lw=1, label="SMUG lambda_l frontier (seed 0)")
        for lam, x, y in points:
            ax.annotate(f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"clean PSNR (dB), test split, mean over {summary['slices']} slices")
    ax.set_ylabel("PGD PSNR (dB), eps 0.02 x s_ref (paper units)")
    ax.set_title("Every model and training seed: accuracy vs robustness (2-core CPU study)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(results / "clean_vs_pgd.png", dpi=120)
    plt.close(fig)

    pgd = data["main/pgd"]
    groups = [g for g in summary["groups"] if g != REFERENCE and g in pgd]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, group in enumerate(groups):
        values = pgd[group]
        reference = pgd[REFERENCE] if values.shape[0] == pgd[REFERENCE].shape[0] else pgd[REFERENCE].mean(0)
        diff = (values - reference).ravel()
        jitter = np.random.default_rng(i).uniform(-0.2, 0.2, diff.size)
        ax.scatter(i + jitter, diff, s=10, alpha=0.6, color=f"C{i % 10}")
        ax.plot([i - 0.3, i + 0.3], [diff.mean()] * 2, "k-", lw=2)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PGD PSNR - MoDL's (dB), per slice and seed")
    ax.set_title(f"Paired per-slice differences to MoDL under PGD ({EPS_UNIT})", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(results / "paired_pgd.png", dpi=120)
    plt.close(fig)


def markdown(summary: dict) -> str:
    lines = [
        "# The study: every model against MoDL over training seeds x test slices",
        "",
        "Written by `python scripts/study_analysis.py` from `robustness.json` (`make reproduce`). PSNR in dB on the "
        f"{summary['slices']} test slices; differences are model - MoDL, paired by seed and slice, with a 95 % "
        "two-level bootstrap interval (seeds, then slices); a one-seed model is compared with MoDL's seed mean. "
        f"Threat model: normalisation fixed from the clean measurement unless the column says otherwise. PGD: "
        f"{EPS_UNIT}, 10 steps.",
        "",
        "| model | seeds | " + " | ".join(CONDITIONS.values()) + " |",
        "|---|---|" + "---|" * len(CONDITIONS),
    ]
    for group, entry in summary["groups"].items():
        cells = []
        for title in CONDITIONS.values():
            c = entry["conditions"].get(title)
            if c is None:
                cells.append("n/a")
                continue
            sd = "" if c["seed_sd"] is None else f" (seed SD {c['seed_sd']:.2f})"
            diff = entry["vs_modl"].get(title)
            cells.append(f"{c['mean']:.2f}{sd}" + ("" if diff is None else f"<br>{fmt(diff)}"))
        lines.append(f"| {group} | {entry.get('seeds', '')} | " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts against MoDL (resolution 1 dB)", ""]
    lines += [
        "| model | clean | PGD | per-slice SD of the PGD difference (dB) | clean, 16 unrolls |",
        "|---|---|---|---|---|",
    ]
    for group, entry in summary["groups"].items():
        vs = entry["vs_modl"]
        if "PGD" not in vs:
            continue
        unrolls = vs.get("clean, 16 unrolls", {}).get("verdict", "n/a")
        verdicts = f"{vs['clean']['verdict']} | {vs['PGD']['verdict']} | {vs['PGD']['slice_sd']:.2f} | {unrolls}"
        lines.append(f"| {group} | {verdicts} |")
    lines += ["", "## The normalisation attack (PGD with the normalisation attacked - PGD with it fixed)", ""]
    lines += ["| model | difference (dB) | largest move of the input normalisation |", "|---|---|---|"]
    for group, entry in summary["groups"].items():
        attack = entry.get("normalisation_attack")
        if attack is not None:
            shift = entry.get("normalisation_shift_max")
            moved = "n/a" if shift is None else f"x {shift:.2f}"
            lines.append(f"| {group} | {fmt(attack)} | {moved} |")
    choice = summary["lambda_l"]
    lines += [
        "",
        "## The lambda_l frontier (journal-equivalent lambda_l, seed 0)",
        "",
        f"Rule ({choice['rule']}): MoDL validation PSNR per seed {choice['modl_val_psnr_per_seed']} dB, tolerance "
        f"{choice['tolerance_db']} dB; chosen lambda_l = {choice['chosen']:g}.",
        "",
        "| lambda_l | validation PSNR | test clean PSNR | test PGD PSNR |",
        "|---|---|---|---|",
    ]
    for lam, clean, pgd in frontier(summary):
        lines.append(f"| {lam:g} | {choice['smug_val_psnr'].get(f'{lam:g}', 'n/a')} | {clean:.2f} | {pgd:.2f} |")
    lines += ["", "Figures: [clean_vs_pgd.png](clean_vs_pgd.png), [paired_pgd.png](paired_pgd.png)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=pathlib.Path, required=True)
    args = parser.parse_args()
    summary = analyse(args.results)
    data, _ = matrices(json.loads((args.results / "robustness.json").read_text())["records"])
    write_figures(args.results, summary, data)
    (args.results / "study_summary.json").write_text(json.dumps(summary, indent=1))
    (args.results / "study.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
