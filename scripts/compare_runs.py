"""Per-slice agreement of two ``smug evaluate`` runs (one process against a torchrun of N ranks; a rerun under other
code or threads against the original).

    python scripts/compare_runs.py RUN_A RUN_B [--metrics psnr ssim nmse]

RUN_A / RUN_B are output folders (their robustness.json) or robustness.json files. First the identity check: every
value of every record compared as JSON text (NaN equals NaN), the timing (``seconds``) excepted, in the order the
reports list them, and the verdict IDENTICAL or DIFFERENT. When they differ, a table: for every (condition, model)
that both runs hold, the slices compared, the largest absolute per-slice difference of each metric and the mean
difference B - A; slices that only one run holds are counted, not compared. Exit status 0 when identical, else 1.
"""

import argparse
import json
import pathlib
import statistics
import sys
from collections import defaultdict

TIMING = "seconds"
Key = tuple[str, str, str, int]  # condition, model, file, slice


def load_records(path: pathlib.Path) -> list[dict]:
    report = path / "robustness.json" if path.is_dir() else path
    try:
        return json.loads(report.read_text())["records"]
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {report}: not a finished smug evaluate report ({error}); give its --output-dir.")


def comparable(record: dict) -> dict:
    return {key: json.dumps(value) for key, value in record.items() if key != TIMING}


def difference_table(first: list[dict], second: list[dict], metrics: list[str]) -> None:
    a, b = ({(r["condition"], r["model"], r["file"], r["slice"]): r for r in records} for records in (first, second))
    cells: dict[tuple[str, str], list[Key]] = defaultdict(list)
    for key in a.keys() & b.keys():
        cells[key[:2]].append(key)
    header = f"{'condition':<24} {'model':<16} {'slices':>6} " + " ".join(
        f"{'max |d ' + m + '|':>13} {'mean d ' + m:>12}" for m in metrics
    )
    print(f"d = B - A per slice\n{header}\n{'-' * len(header)}")
    for (condition, model), keys in sorted(cells.items()):
        columns = []
        for metric in metrics:
            diffs = [b[k][metric] - a[k][metric] for k in keys]
            columns.append(f"{max(abs(d) for d in diffs):>13.2e} {statistics.mean(diffs):>+12.2e}")
        print(f"{condition:<24} {model:<16} {len(keys):>6} " + " ".join(columns))
    print(f"slices in A only: {len(a.keys() - b.keys())}, in B only: {len(b.keys() - a.keys())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=pathlib.Path)
    parser.add_argument("second", type=pathlib.Path)
    parser.add_argument("--metrics", nargs="+", default=["psnr", "ssim", "nmse"])
    args = parser.parse_args()
    first, second = load_records(args.first), load_records(args.second)
    print(f"A = {args.first}: {len(first)} records; B = {args.second}: {len(second)} records")
    print(f"conditions: {', '.join(sorted({r['condition'] for r in first}))}")
    print(f"models: {', '.join(sorted({r['model'] for r in first}))}")
    same = sum(comparable(x) == comparable(y) for x, y in zip(first, second, strict=False))
    print(f"records identical in every value but '{TIMING}', in the same order: {same} of {len(first)}")
    if len(first) == len(second) == same:
        print("verdict: IDENTICAL")
        return 0
    print("verdict: DIFFERENT")
    difference_table(first, second, args.metrics)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
