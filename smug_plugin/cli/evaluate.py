"""``smug evaluate``: robustness evaluation of DIRECT-trained checkpoints under attacks, noise and test-time shifts."""

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
    parser.add_argument("--protocol", required=True, type=pathlib.Path, help="Robustness protocol YAML.")
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

    from smug_plugin.robustness.evaluate import RunSettings, run_evaluation
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
        paths = run_evaluation(args.model, args.protocol, settings)
    except (FileNotFoundError, FileExistsError, ProtocolError, ValueError) as e:
        print(f"smug evaluate: error: {e}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
