"""``smug metrics``: the validation metrics ``direct train`` reached, next to the zero-filled baseline."""

import json
import pathlib
import re
import sys

METRIC_NAMES = ("fastmri_psnr", "fastmri_ssim", "fastmri_nmse")
METRIC_KEYS = tuple(f"{metric}_metric" for metric in METRIC_NAMES)  # their keys in DIRECT's metrics files


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


def volume_means(path: pathlib.Path, keys: tuple[str, ...] = METRIC_KEYS) -> dict[str, float]:
    """Mean over volumes of each of ``keys`` (``fastmri_psnr_metric``, ...) in one ``metrics_val_*.json`` (those it
    holds), by key.

    Raises
    ------
    ValueError
        The file is not valid JSON or holds none of ``keys``.
    """
    try:
        per_volume = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        detail = f"{error.msg}, line {error.lineno}" if isinstance(error, json.JSONDecodeError) else error.reason
        raise ValueError(
            f"{path} is not valid JSON ({detail}): probably cut short by an interrupted validation; delete it (the "
            "previous iteration is then used) or validate again."
        ) from error
    volumes = list(per_volume.values()) if isinstance(per_volume, dict) else []
    means = {}
    for key in keys:
        values = [v[key] for v in volumes if isinstance(v, dict) and key in v]
        if values:
            means[key] = sum(values) / len(values)
    if not means:
        raise ValueError(
            f"{path} holds no per-volume {', '.join(keys)}: not a metrics file of DIRECT's validation, or the YAML's "
            "validation.metrics lists none of them; add them there or pass another run."
        )
    return means


def validation_files(run_dir: pathlib.Path) -> dict[str, dict[int, pathlib.Path]]:
    """``{dataset: {iteration: metrics_val_<dataset>_<iteration>.json}}`` of a ``direct train`` run folder.

    Raises
    ------
    FileNotFoundError
        ``run_dir`` does not exist or holds no ``metrics_val_*.json``.
    """
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir} is not a folder, so it holds no metrics_val_*.json: has `direct train` validated this run "
            "yet? Pass the experiment folder given to `direct train`."
        )
    files = list(run_dir.rglob("metrics_val_*.json"))
    if not files:
        raise FileNotFoundError(f"No metrics_val_*.json under {run_dir}: has `direct train` validated this run yet?")
    pattern = re.compile(r"metrics_val_(?P<dataset>.+)_(?P<iteration>\d+)\.json$")
    found: dict[str, dict[int, pathlib.Path]] = {}
    for path in files:
        match = pattern.match(path.name)
        if match:
            found.setdefault(match["dataset"], {})[int(match["iteration"])] = path
    return found


def last_validation_metrics(run_dir: pathlib.Path) -> dict[str, dict[str, float]]:
    """``{dataset: {metric: mean over volumes}}`` of the last validated iteration of a run.

    Raises
    ------
    FileNotFoundError
        ``run_dir`` does not exist or holds no ``metrics_val_*.json``.
    ValueError
        The last metrics file of a dataset is not valid JSON or holds none of ``METRIC_NAMES``.
    """
    out = {}
    for dataset, iterations in sorted(validation_files(run_dir).items()):
        iteration = max(iterations)
        means = volume_means(iterations[iteration])
        out[dataset] = {
            "iteration": iteration,
            **{m: means[k] for m, k in zip(METRIC_NAMES, METRIC_KEYS) if k in means},
        }
    return out


FORMATS = {"fastmri_psnr": "{:.2f}", "fastmri_ssim": "{:.4f}", "fastmri_nmse": "{:.4f}"}


def _row(name: str, dataset: str, values: dict) -> str:
    cells = [FORMATS[m].format(values[m]) if m in values else "n/a" for m in METRIC_NAMES]
    return f"| {name} | {dataset} | {values.get('iteration', '')} | " + " | ".join(cells) + " |"


def run(args) -> int:
    """Print the table; return 2 with one line on stderr (the file, the problem, the fix) on bad input."""
    lines = ["| run | validation set | iteration | PSNR (dB) | SSIM | NMSE |", "|---|---|---|---|---|---|"]
    try:
        for run_dir in args.runs:
            for dataset, values in last_validation_metrics(run_dir).items():
                lines.append(_row(run_dir.name, dataset, values))
        if args.zero_filled:
            from smug_plugin.cli.foundation import path_problem
            from smug_plugin.data.zero_filled import zero_filled_metrics

            problem = path_problem("--zero-filled DATA_ROOT", pathlib.Path(args.zero_filled[1]))  # a link loop
            if problem is not None:
                raise ValueError(problem)
            for dataset, values in zero_filled_metrics(*args.zero_filled).items():
                lines.append(_row("zero-filled", dataset, values))
    except (OSError, ValueError) as error:
        from smug_plugin.cli.foundation import one_line

        print(f"smug metrics: error: {one_line(error)}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
