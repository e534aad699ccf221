"""Paired per-slice PSNR differences between two cells of a `smug evaluate` run.

    python scripts/paired_differences.py RUN_DIR/robustness.json "CONDITION|MODEL" "CONDITION|MODEL" [...]

Cells are given in pairs (A B): for each pair it prints mean ± std over the slices of PSNR(A) - PSNR(B) and on how
many slices A is higher, e.g. "main/pgd|SMUG" "main/pgd|MoDL" or "num_samples=10/pgd|SMUG" "num_samples=1/pgd|SMUG".
"""

import argparse
import json
import pathlib
import statistics


def cell_psnr(records: list[dict], cell: str) -> dict[tuple[str, int], float]:
    condition, model = cell.split("|")
    found = {(r["file"], r["slice"]): r["psnr"] for r in records if (r["condition"], r["model"]) == (condition, model)}
    if not found:
        raise SystemExit(f"error: no records of condition {condition!r} and model {model!r}.")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=pathlib.Path, help="robustness.json of a smug evaluate run")
    parser.add_argument("cells", nargs="+", help="pairs of CONDITION|MODEL")
    args = parser.parse_args()
    if len(args.cells) % 2:
        parser.error("give the cells in pairs")
    records = json.loads(args.report.read_text())["records"]
    for first, second in zip(args.cells[::2], args.cells[1::2]):
        a, b = cell_psnr(records, first), cell_psnr(records, second)
        diffs = [a[key] - b[key] for key in a if key in b]
        wins = sum(d > 0 for d in diffs)
        print(
            f"{first} - {second}: {statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} dB "
            f"(higher on {wins} of {len(diffs)} slices)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
