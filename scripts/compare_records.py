"""Compares the per-slice records of two ``smug evaluate`` runs (e.g. one process and a torchrun of N ranks).

Every value of every record is compared as JSON text (NaN equals NaN), the timing (``seconds``) excepted, in the
order the reports list them. Prints the verdict and, when records differ, the largest differences per metric;
exits 1 when they differ.

    python scripts/compare_records.py RUN_A RUN_B        # folders holding robustness.json
"""

import argparse
import json
import math
import pathlib
import sys

TIMING = "seconds"


def load_records(run: pathlib.Path) -> list[dict]:
    path = run / "robustness.json"
    if not path.is_file():
        sys.exit(f"{path} does not exist: give the --output-dir of a finished smug evaluate run.")
    return json.loads(path.read_text())["records"]


def comparable(record: dict) -> dict:
    return {key: json.dumps(value) for key, value in record.items() if key != TIMING}


def largest_differences(first: list[dict], second: list[dict]) -> dict[str, float]:
    """The largest absolute difference of every numeric value that differs between records at the same place."""
    largest = {}
    for a, b in zip(first, second, strict=False):
        for key, value in a.items():
            other = b.get(key)
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, other))
            if key != TIMING and numbers and value != other and not (math.isnan(value) and math.isnan(other)):
                largest[key] = max(largest.get(key, 0.0), abs(value - other))
    return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=pathlib.Path)
    parser.add_argument("second", type=pathlib.Path)
    args = parser.parse_args()
    first, second = load_records(args.first), load_records(args.second)
    print(f"{args.first}: {len(first)} records; {args.second}: {len(second)} records")
    same = [comparable(a) == comparable(b) for a, b in zip(first, second, strict=False)]
    conditions = sorted({r["condition"] for r in first})
    models = sorted({r["model"] for r in first})
    print(f"conditions ({len(conditions)}): {', '.join(conditions)}")
    print(f"models ({len(models)}): {', '.join(models)}")
    print(f"records identical in every value but '{TIMING}', in the same order: {sum(same)} of {len(first)}")
    if len(first) == len(second) and all(same):
        print("verdict: IDENTICAL")
        return
    for key, difference in sorted(largest_differences(first, second).items()):
        print(f"  largest |difference| of {key}: {difference:.3g}")
    print("verdict: DIFFERENT")
    sys.exit(1)


if __name__ == "__main__":
    main()
