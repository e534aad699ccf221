"""``smug select``: the checkpoint of a ``direct train`` run with the best robust validation metric among those
within a tolerance of the best clean one.

With robust validation on (``robust_validation_budget > 0``), every validation of the plugin's engines writes the
clean metric (``fastmri_psnr_metric``) and its value under PGD (``fastmri_psnr_metric_pgd``) per volume into
``metrics_val_<dataset>_<iteration>.json``. Selecting on the clean metric alone picks a checkpoint that may be
much less robust than one a fraction of a dB below it; this command shows the trade-off and names the checkpoint.
"""

import argparse
import math
import pathlib
import sys
from dataclasses import dataclass

ROBUST_SUFFIX = "_pgd"
# The direction of DIRECT's metrics (direct.functionals, validation.metrics of a YAML), by a part of their name.
HIGHER_IS_BETTER = ("psnr", "ssim", "snr")
LOWER_IS_BETTER = ("nmse", "mse", "nmae", "mae", "hfen", "l1", "l2", "loss", "error")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "select",
        help="name the checkpoint of a direct train run with the best robust validation metric",
        description="Reads metrics_val_<dataset>_<iteration>.json of a direct train run (robust validation on) and "
        "names the checkpoint model_<iteration>.pt with the best robust metric (<metric>_pgd) among the validated "
        "checkpoints whose clean metric is within --tolerance-db of the best clean one; prints the table.",
    )
    parser.add_argument("run", type=pathlib.Path, help="the run folder written by direct train")
    parser.add_argument(
        "--tolerance-db", type=float, default=0.5, help="how far below the best clean metric a checkpoint may be"
    )
    parser.add_argument(
        "--tolerance", type=float, default=None, help="--tolerance-db in the metric's units (for a metric not in dB)"
    )
    parser.add_argument("--metric", default="fastmri_psnr_metric", help="the validation metric's key")
    parser.add_argument(
        "--better",
        choices=["higher", "lower"],
        default=None,
        help="whether higher or lower values of --metric are better (known for DIRECT's metrics: psnr, ssim, nmse)",
    )
    parser.add_argument("--dataset", default=None, help="the validation set, when the run validates on several")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Candidate:
    """One validated iteration: its checkpoint (None when direct train kept none), clean and robust metric."""

    iteration: int
    checkpoint: pathlib.Path | None
    clean: float
    robust: float


def candidates(run_dir: pathlib.Path, metric: str, dataset: str | None) -> tuple[str, list[Candidate]]:
    """Every validated iteration of the run's (only, or named) validation set.

    Raises
    ------
    FileNotFoundError, ValueError
        A missing run or metrics, several validation sets and no ``dataset``, no robust metric.
    """
    from smug_plugin.cli.metrics import validation_files, volume_means

    files = validation_files(run_dir)
    if dataset is None and len(files) > 1:
        raise ValueError(f"{run_dir} validates on {', '.join(sorted(files))}: choose one with --dataset.")
    dataset = dataset if dataset is not None else next(iter(files))
    if dataset not in files:
        raise ValueError(f"{run_dir} has no validation set '{dataset}' (it has {', '.join(sorted(files))}).")
    robust_metric = f"{metric}{ROBUST_SUFFIX}"
    out = []
    for iteration, path in sorted(files[dataset].items()):
        means = volume_means(path, (metric, robust_metric))
        if metric not in means or robust_metric not in means:
            missing = metric if metric not in means else robust_metric
            raise ValueError(
                f"{path} holds no per-volume {missing}: "
                + (
                    "robust validation was off; set model.robust_validation_budget > 0 in the YAML and train again."
                    if robust_metric not in means
                    else "add it to the YAML's validation.metrics."
                )
            )
        checkpoint = next(run_dir.rglob(f"model_{iteration}.pt"), None)
        out.append(Candidate(iteration, checkpoint, means[metric], means[robust_metric]))
    return dataset, out


def direction(metric: str, better: str | None) -> int:
    """+1 where higher values of ``metric`` are better, -1 where lower ones are: ``better`` if given, else known
    from DIRECT's metric names.

    Raises
    ------
    ValueError
        An unknown metric and no ``better``.
    """
    if better is not None:
        return 1 if better == "higher" else -1
    name = metric.lower()
    if any(part in name for part in LOWER_IS_BETTER) and not any(part in name for part in ("psnr", "ssim")):
        return -1
    if any(part in name for part in HIGHER_IS_BETTER):
        return 1
    raise ValueError(f"--metric {metric}: whether higher or lower is better is not known; say so with --better.")


def usable(candidate: Candidate) -> bool:
    """A candidate with a checkpoint and finite metrics (a NaN never wins, nor sets the best clean value)."""
    return candidate.checkpoint is not None and math.isfinite(candidate.clean) and math.isfinite(candidate.robust)


def select(found: list[Candidate], tolerance_db: float, sign: int = 1) -> Candidate:
    """The checkpoint with the best robust metric among those within ``tolerance_db`` of the best clean metric
    (among iterations with a checkpoint and finite metrics); ``sign``: +1 higher is better, -1 lower is better; ties
    go to the later iteration.

    Raises
    ------
    ValueError
        No validated iteration has a checkpoint, or none with finite metrics.
    """
    saved = [c for c in found if c.checkpoint is not None]
    if not saved:
        raise ValueError("no validated iteration has its model_<iteration>.pt: direct train kept none of them.")
    finite = [c for c in saved if usable(c)]
    if not finite:
        raise ValueError(
            "every validated iteration with a checkpoint has a NaN or infinite clean or robust metric: the training "
            "diverged, or validation failed; look at the run's metrics_val_*.json."
        )
    best_clean = best_clean_value(finite, sign)
    within = [c for c in finite if sign * (c.clean - best_clean) >= -tolerance_db]
    return max(within, key=lambda c: (sign * c.robust, c.iteration))


def best_clean_value(found: list[Candidate], sign: int) -> float:
    """The best clean metric among the usable candidates."""
    values = [c.clean for c in found if usable(c)]
    return max(values) if sign > 0 else min(values)


def run(args: argparse.Namespace) -> int:
    """Print the table and the selected checkpoint; return 2 with one line on stderr on bad input."""
    option, tolerance = (
        ("--tolerance", args.tolerance) if args.tolerance is not None else ("--tolerance-db", args.tolerance_db)
    )
    if not math.isfinite(tolerance) or tolerance < 0:
        print(f"smug select: error: {option} must be a finite number >= 0, got {tolerance}.", file=sys.stderr)
        return 2
    try:
        sign = direction(args.metric, args.better)
        dataset, found = candidates(args.run, args.metric, args.dataset)
        chosen = select(found, tolerance, sign)
    except (OSError, ValueError) as error:
        print(f"smug select: error: {error}", file=sys.stderr)
        return 2
    best_clean = best_clean_value(found, sign)
    unit = " dB" if "psnr" in args.metric.lower() else ""
    lines = [
        f"validation set {dataset}: {args.metric} clean and under PGD ({args.metric}{ROBUST_SUFFIX}), "
        f"{'higher' if sign > 0 else 'lower'} is better, tolerance {tolerance:g}{unit} "
        f"{'below' if sign > 0 else 'above'} the best clean {best_clean:.3f}",
        "",
        "| iteration | checkpoint | clean | robust | within tolerance | selected |",
        "|---|---|---|---|---|---|",
    ]
    for c in found:
        within = usable(c) and sign * (c.clean - best_clean) >= -tolerance
        name = c.checkpoint.name if c.checkpoint is not None else "(none kept)"
        mark = "**yes**" if c is chosen else ""
        lines.append(
            f"| {c.iteration} | {name} | {c.clean:.3f} | {c.robust:.3f} | {'yes' if within else 'no'} | {mark} |"
        )
    lines += ["", f"selected: {chosen.checkpoint}"]
    print("\n".join(lines))
    return 0
