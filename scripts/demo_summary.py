"""The last words of `make demo`: a few plain lines read from `smug evaluate`'s robustness.json.

Clean and attacked PSNR per model (mean over the test slices), each model's paired difference to the reference
model under the attack with a 95 % t-interval over slices, one sentence of reading, and where the report and the
figures are. Usage: python scripts/demo_summary.py runs/demo/robustness/robustness.json
"""

import argparse
import json
import math
import pathlib
import statistics
import sys

CLEAN = "main/clean"
ATTACK = "main/pgd"


def slice_psnr(records: list[dict], condition: str, model: str) -> dict[tuple[str, int], float]:
    """PSNR per (file, slice) of one model under one condition (records without a finite PSNR left out)."""
    return {
        (r["file"], r["slice"]): r["psnr"]
        for r in records
        if r.get("condition") == condition
        and r.get("model") == model
        and isinstance(r.get("psnr"), int | float)
        and math.isfinite(r["psnr"])
    }


def t_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval (low, high) of paired differences; the interval is nan for fewer than 2."""
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def reading(model: str, reference: str, low: float, high: float) -> str:
    """One sentence on what the interval says about these slices."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "Too few slices for an interval."
    if low > 0:
        return f"On these slices {model} keeps more of the image than {reference} under the attack."
    if high < 0:
        return f"On these slices {model} loses more of the image than {reference} under the attack."
    return f"On these slices {model} and {reference} cannot be told apart under the attack (the interval holds 0)."


def summary(report: dict, report_dir: pathlib.Path) -> str:
    """The plain-text summary of a robustness.json (see the module docstring)."""
    records = report.get("records", [])
    models = [m["name"] for m in report.get("models", [])] or sorted({r["model"] for r in records})
    reference = report.get("reference") or models[0]
    clean = {m: slice_psnr(records, CLEAN, m) for m in models}
    attacked = {m: slice_psnr(records, ATTACK, m) for m in models}
    slices = len(next(iter(clean.values()), {}))
    width = max(map(len, models))
    lines = [
        f"Demo result: PSNR (dB), mean over {slices} test slices at 4x; attacked = PGD on the measured k-space "
        "(protocol paper).",
        f"  {'model':<{width}}  {'clean':>6}  {'attacked':>8}",
    ]
    for m in models:
        c = statistics.fmean(clean[m].values()) if clean[m] else math.nan
        a = statistics.fmean(attacked[m].values()) if attacked[m] else math.nan
        lines.append(f"  {m:<{width}}  {c:6.2f}  {a:8.2f}")
    for m in models:
        if m == reference:
            continue
        common = sorted(attacked[m].keys() & attacked[reference].keys())
        if not common:
            lines.append(f"{m} - {reference} under the attack: no common slices.")
            continue
        mean, low, high = t_interval([attacked[m][k] - attacked[reference][k] for k in common])
        lines.append(
            f"{m} - {reference} under the attack: {mean:+.2f} dB, 95 % t-interval [{low:+.2f}, {high:+.2f}] "
            f"(n = {len(common)} slices, one training seed: not a finding)."
        )
        lines.append(reading(m, reference, low, high))
    figures = sorted(p.name for p in report_dir.glob("*.png"))
    cards = f"; cards: {report_dir / 'cards'}/" if (report_dir / "cards").is_dir() else ""
    lines.append(f"Report: {report_dir / 'robustness.md'} (tables, sanity checks){cards}")
    if figures:
        # The kinds, not every file: one short line (panels, the sweeps, the sanity checks).
        kinds = sorted(
            {
                "psnr_vs_*.png" if n.startswith("psnr_vs_") else n.split("_")[0] + "_*.png" if "_" in n else n
                for n in figures
            }
        )
        lines.append(f"Figures: {report_dir}/ ({len(figures)} file{'s' * (len(figures) != 1)}: {', '.join(kinds)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=pathlib.Path, help="robustness.json of smug evaluate")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as error:
        print(f"demo_summary: error: {args.report}: {error}", file=sys.stderr)
        return 2
    print(summary(report, args.report.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
