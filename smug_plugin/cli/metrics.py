"""``smug metrics``: the validation metrics ``direct train`` reached, next to the zero-filled baseline."""

import json
import pathlib
import re

METRIC_NAMES = ("fastmri_psnr", "fastmri_ssim", "fastmri_nmse")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "metrics",
        help="print the last validation metrics of direct train runs",
        description="Reads metrics_val_<dataset>_<iteration>.json of each run directory (the last iteration) and "
        "prints the mean over validation volumes; with --zero-filled also the zero-filled baseline.",
    )
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="experiment folders written by direct train")
    parser.add_argument("--zero-filled", nargs=2, metavar=("CONFIG", "DATA_ROOT"), help="YAML and validation root")
    parser.set_defaults(func=run)


def last_validation_metrics(run_dir: pathlib.Path) -> dict[str, dict[str, float]]:
    """``{dataset: {metric: mean over volumes}}`` of the last validated iteration of a run."""
    files = list(run_dir.rglob("metrics_val_*.json"))
    if not files:
        raise FileNotFoundError(f"No metrics_val_*.json under {run_dir}: has `direct train` validated this run yet?")
    pattern = re.compile(r"metrics_val_(?P<dataset>.+)_(?P<iteration>\d+)\.json$")
    latest: dict[str, tuple[int, pathlib.Path]] = {}
    for path in files:
        match = pattern.match(path.name)
        if match:
            iteration = int(match["iteration"])
            if iteration >= latest.get(match["dataset"], (-1, None))[0]:
                latest[match["dataset"]] = (iteration, path)
    results = {}
    for dataset, (iteration, path) in sorted(latest.items()):
        per_volume = json.loads(path.read_text())
        means = {}
        for metric in METRIC_NAMES:
            values = [v[f"{metric}_metric"] for v in per_volume.values() if f"{metric}_metric" in v]
            if values:
                means[metric] = sum(values) / len(values)
        results[dataset] = {"iteration": iteration, **means}
    return results


FORMATS = {"fastmri_psnr": "{:.2f}", "fastmri_ssim": "{:.4f}", "fastmri_nmse": "{:.4f}"}


def _row(name: str, dataset: str, values: dict) -> str:
    cells = [FORMATS[m].format(values[m]) if m in values else "n/a" for m in METRIC_NAMES]
    return f"| {name} | {dataset} | {values.get('iteration', '')} | " + " | ".join(cells) + " |"


def run(args) -> int:
    lines = ["| run | validation set | iteration | PSNR (dB) | SSIM | NMSE |", "|---|---|---|---|---|---|"]
    for run_dir in args.runs:
        try:
            metrics = last_validation_metrics(run_dir)
        except FileNotFoundError as error:
            print(f"error: {error}")
            return 2
        for dataset, values in metrics.items():
            lines.append(_row(run_dir.name, dataset, values))
    if args.zero_filled:
        from smug_plugin.data.zero_filled import zero_filled_metrics

        for dataset, values in zero_filled_metrics(*args.zero_filled).items():
            lines.append(_row("zero-filled", dataset, values))
    print("\n".join(lines))
    return 0
