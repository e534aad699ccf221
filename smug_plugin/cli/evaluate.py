"""``smug evaluate``: robustness evaluation of DIRECT-trained checkpoints under attacks, noise and test-time shifts.

This module wires the pieces together: protocol and models in, the evaluation loop, the reports out.
"""

import argparse
import pathlib


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="Evaluate DIRECT checkpoints under PGD attacks, noise, sampling-rate and unroll shifts.",
        description=(
            "Evaluates every --model on the data under --data-root with the DIRECT inference transforms of the "
            "reference model's YAML, under each perturbation and shift of the --protocol. Writes robustness.json, "
            "robustness.csv, robustness.md and figures to --output-dir, appending per-slice records as they are "
            "computed (records.jsonl) so that --resume can continue an interrupted run."
        ),
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=CONFIG.yaml:CHECKPOINT.pt",
        help=(
            "A model to evaluate (repeatable): display name, DIRECT YAML with an inference section, checkpoint; or "
            "NAME=CS.yaml, the l1-wavelet CS baseline of `smug cs-tune` (on the first DIRECT model's operator)."
        ),
    )
    parser.add_argument(
        "--protocol",
        required=True,
        metavar="NAME|PATH",
        help="Robustness protocol: a shipped one by name (paper, reproduce, smoke, ...) or a protocol YAML.",
    )
    parser.add_argument("--data-root", required=True, type=pathlib.Path, help="Directory of fastMRI-format h5 files.")
    parser.add_argument("--output-dir", required=True, type=pathlib.Path)
    parser.add_argument("--reference", default=None, help="Model the table is relative to (default: the first).")
    parser.add_argument("--seed", type=int, default=None, help="Run seed (default: the protocol's seed).")
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted run in --output-dir.")
    parser.add_argument("--max-slices", type=int, default=None, help="Evaluate only the first N slices.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4, help="Slices attacked at once (within one volume).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    import torch

    from smug_plugin.robustness.loop import RunSettings
    from smug_plugin.robustness.output_lock import output_dir_lock
    from smug_plugin.robustness.protocol import ProtocolError

    problem = argument_problem(args)
    if problem is not None:
        print(f"smug evaluate: error: {problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    settings = RunSettings(
        data_root=args.data_root,
        output_dir=args.output_dir,
        reference=args.reference,
        seed=args.seed,
        resume=args.resume,
        max_slices=args.max_slices,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    try:
        with output_dir_lock(args.output_dir):  # one run per output folder, checked before anything is loaded
            paths = run_evaluation(args.model, args.protocol, settings)
    except (OSError, ProtocolError, ValueError) as e:  # OSError: a file that cannot be read or written, named
        print(f"smug evaluate: error: {e}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, checked before anything is loaded (None: nothing)."""
    import os

    from smug_plugin.robustness.protocol import is_seed

    counts = {"--batch-size": args.batch_size, "--max-slices": args.max_slices, "--threads": args.threads}
    for option, value in counts.items():
        if value is not None and value < 1:
            return f"{option} must be positive, got {value}."
    if args.seed is not None and not is_seed(args.seed):
        return f"--seed must be in [0, 2**32 - 1], got {args.seed}."
    device = device_problem(args.device)
    if device is not None:
        return device
    existing = next(p for p in [args.output_dir, *args.output_dir.absolute().parents] if p.exists())
    if not existing.is_dir():
        return f"--output-dir {args.output_dir}: {existing} is a file, not a folder; give a folder for the results."
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--output-dir {args.output_dir}: {existing} is not writable; give a folder you can write to."
    return None


def device_problem(device: str) -> str | None:
    """Why torch cannot compute on ``device`` here (None: it can)."""
    import torch

    try:
        kind = torch.device(device)
    except RuntimeError:
        return f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps)."
    if kind.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: torch {torch.__version__} finds no usable CUDA GPU here; use --device cpu."
    if kind.type == "cuda" and kind.index is not None and kind.index >= torch.cuda.device_count():
        return f"--device {device}: there are {torch.cuda.device_count()} CUDA GPUs (cuda:0 ...); choose one of them."
    if kind.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: no MPS device is available here; use --device cpu."
    if kind.type not in ("cpu", "cuda", "mps"):
        return f"--device {device}: smug evaluate runs on cpu, cuda or mps."
    return None


def _manifest(models, protocol, settings) -> dict:
    """What a resumed run must share with the interrupted one."""
    import hashlib

    def digest(model, key: str) -> str:
        return hashlib.sha256(pathlib.Path(model.provenance[key]).read_bytes()).hexdigest()[:16]

    return {
        "protocol": protocol.to_dict(),
        "models": [
            {
                "name": m.name,
                "config_sha": digest(m, "config"),
                "ckpt_sha": digest(m, "checkpoint") if "checkpoint" in m.provenance else None,  # CS: none
            }
            for m in models
        ],
        "data_root": str(settings.data_root),
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "max_slices": settings.max_slices,
    }


def run_evaluation(model_specs: list[str], protocol_name: str | pathlib.Path, settings) -> dict:
    """Load protocol and models, evaluate, write the reports; returns the paths of the written files.

    Parameters
    ----------
    model_specs : list[str]
        ``NAME=CONFIG.yaml:CHECKPOINT.pt`` entries; the first is the reference unless `settings.reference` is set.
    protocol_name : str or pathlib.Path
        A shipped protocol's name or a protocol YAML.
    settings : RunSettings
        Data, output, seed, device, batching, resume.
    """
    import random
    import sys
    import time

    import numpy as np
    import torch

    from smug_plugin.robustness.attacks.budgets import PAPER_NEEDS_FULLY_SAMPLED
    from smug_plugin.robustness.checkpoints import ModelSpec, training_config_warnings
    from smug_plugin.robustness.cs_model import load_models, parse_model_spec
    from smug_plugin.robustness.data_files import check_data_root, check_fully_sampled
    from smug_plugin.robustness.loop import Evaluator
    from smug_plugin.robustness.protocol import load_protocol
    from smug_plugin.robustness.records import open_store
    from smug_plugin.robustness.reports.figures import make_figures
    from smug_plugin.robustness.reports.tables import write_reports

    if not model_specs:
        raise ValueError("Give at least one --model NAME=CONFIG.yaml:CHECKPOINT.pt.")
    protocol = load_protocol(protocol_name)
    if settings.seed is None:
        settings.seed = protocol.seed
    specs = [parse_model_spec(s) for s in model_specs]
    for spec in specs:
        spec.check_files()  # fail on a missing checkpoint before spending time on loading others
    protocol.check_models([spec.name for spec in specs])
    if not pathlib.Path(settings.data_root).is_dir():
        raise FileNotFoundError(f"Data root not found: {settings.data_root}")
    data_issues = [issue.to_dict() for issue in check_data_root(pathlib.Path(settings.data_root))]
    if protocol.needs_reference_scale:
        check_fully_sampled(pathlib.Path(settings.data_root), PAPER_NEEDS_FULLY_SAMPLED)
    for issue in data_issues:
        print(f"smug evaluate: WARNING: {issue['file']}: {issue['problem']}", file=sys.stderr)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    models = load_models(specs, settings.device, settings.output_dir / "direct_logs")
    direct_models = [(spec, m) for spec, m in zip(specs, models) if isinstance(spec, ModelSpec)]
    warnings = [w for spec, m in direct_models for w in training_config_warnings(spec, m.cfg)]
    for warning in warnings:
        print(f"smug evaluate: WARNING: {warning}", file=sys.stderr)
    store = open_store(settings.output_dir, _manifest(models, protocol, settings), settings.resume)
    evaluator = Evaluator(models, protocol, settings)
    protocol = evaluator.protocol  # with transfer_from: each expanded per source model
    started = time.time()

    def run_facts(complete: bool) -> dict:
        return {
            "seed": settings.seed,
            "protocol_seed": protocol.seed,
            "data_root": str(settings.data_root),
            "batch_size": settings.batch_size,
            "max_slices": settings.max_slices,
            "device": settings.device,
            "resumed": settings.resume,
            "torch_threads": torch.get_num_threads(),
            "wall_seconds_this_session": time.time() - started,
            "timings": dict(evaluator.timings),
            "data_from_model": evaluator.data_model.name,
            "complete": complete,
        }

    describe = [m.describe() for m in models]
    layout = [
        {"condition": c.id, "group": c.group, "sweep_value": c.sweep_value, "perturbation": c.perturbation.name}
        for c in protocol.conditions()
    ]

    def report(complete: bool) -> dict:
        return write_reports(
            settings.output_dir,
            store.records,
            describe,
            evaluator.reference,
            protocol.to_dict(),
            run_facts(complete),
            layout,
            data_issues,
            warnings,
        )

    evaluator.run(store, on_progress=lambda: report(False))
    paths = report(True)
    paths.update(make_figures(settings.output_dir, store.records, describe))
    return paths
