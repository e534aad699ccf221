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
        help="A model to evaluate (repeatable): display name, DIRECT YAML with an inference section, checkpoint.",
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

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.batch_size < 1 or (args.max_slices is not None and args.max_slices < 1):
        print("smug evaluate: --batch-size and --max-slices must be positive.", file=sys.stderr)
        return 2
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
    except (FileNotFoundError, FileExistsError, ProtocolError, ValueError) as e:
        print(f"smug evaluate: error: {e}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _manifest(models, protocol, settings) -> dict:
    """What a resumed run must share with the interrupted one."""
    import hashlib

    def digest(model, key: str) -> str:
        return hashlib.sha256(pathlib.Path(model.provenance[key]).read_bytes()).hexdigest()[:16]

    return {
        "protocol": protocol.to_dict(),
        "models": [
            {"name": m.name, "config_sha": digest(m, "config"), "ckpt_sha": digest(m, "checkpoint")} for m in models
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
    import time

    import numpy as np
    import torch

    from smug_plugin.robustness.checkpoints import ModelSpec, load_reconstructor
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
    specs = [ModelSpec.parse(s) for s in model_specs]
    for spec in specs:
        spec.check_files()  # fail on a missing checkpoint before spending time on loading others
    if not pathlib.Path(settings.data_root).is_dir():
        raise FileNotFoundError(f"Data root not found: {settings.data_root}")
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    models = [load_reconstructor(spec, settings.device, settings.output_dir / "direct_logs") for spec in specs]
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
        )

    evaluator.run(store, on_progress=lambda: report(False))
    paths = report(True)
    paths.update(make_figures(settings.output_dir, store.records, describe))
    return paths
