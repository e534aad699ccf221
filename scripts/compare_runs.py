"""Per-slice agreement of two `smug evaluate` runs (a rerun under other code, threads or ranks against the original).

    python scripts/compare_runs.py RUN_A RUN_B [--metrics psnr ssim nmse]

RUN_A / RUN_B are output folders (their robustness.json) or robustness.json files. For every (condition, model)
that both runs hold it prints the slices compared, the largest absolute per-slice difference of each metric and
the mean difference B - A; slices that only one run holds are counted, not compared. Exit status 0.
"""

import argparse
import json
import pathlib
import statistics
from collections import defaultdict

Key = tuple[str, str, str, int]  # condition, model, file, slice


def read_records(path: pathlib.Path) -> dict[Key, dict]:
    report = path / "robustness.json" if path.is_dir() else path
    try:
        records = json.loads(report.read_text())["records"]
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"error: {report}: not a smug evaluate report ({error}); pass a run folder.") from None
    return {(r["condition"], r["model"], r["file"], r["slice"]): r for r in records}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=pathlib.Path)
    parser.add_argument("second", type=pathlib.Path)
    parser.add_argument("--metrics", nargs="+", default=["psnr", "ssim", "nmse"])
    args = parser.parse_args()
    first, second = read_records(args.first), read_records(args.second)
    cells: dict[tuple[str, str], list[Key]] = defaultdict(list)
    for key in first.keys() & second.keys():
        cells[key[:2]].append(key)
    header = f"{'condition':<24} {'model':<16} {'slices':>6} " + " ".join(
        f"{'max |d ' + m + '|':>13} {'mean d ' + m:>12}" for m in args.metrics
    )
    print(f"A = {args.first}\nB = {args.second}\nd = B - A per slice\n{header}\n{'-' * len(header)}")
    for (condition, model), keys in sorted(cells.items()):
        columns = []
        for metric in args.metrics:
            diffs = [second[k][metric] - first[k][metric] for k in keys]
            columns.append(f"{max(abs(d) for d in diffs):>13.2e} {statistics.mean(diffs):>+12.2e}")
        print(f"{condition:<24} {model:<16} {len(keys):>6} " + " ".join(columns))
    only = len(first.keys() - second.keys()), len(second.keys() - first.keys())
    print(f"slices in A only: {only[0]}, in B only: {only[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
