"""``smug cs-tune``: choose the l1 weight of the CS baseline on the validation split and write its YAML.

Every candidate weight reconstructs the validation slices with the operator and batches of a DIRECT model (the one
the CS model will be evaluated beside); the weight of the best mean PSNR (fastMRI, per slice) is written with the
other settings and every candidate's PSNR to the YAML that ``smug evaluate --model NAME=CS.yaml`` reads.
"""

import argparse
import pathlib

from smug_plugin.cli.foundation import check_inputs, one_line, output_file_problem, use_threads

DEFAULT_WEIGHTS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cs-tune",
        help="Choose the CS baseline's l1-wavelet weight on validation data; write its YAML.",
        description=(
            "Reconstructs the slices under --data-root with l1-wavelet SENSE (FISTA) for each --weights value, on "
            "the masks, coil maps and normalisation of --data-model, and writes the weight of the best mean PSNR to "
            "--output (a CS model YAML for smug evaluate --model NAME=CS.yaml)."
        ),
    )
    parser.add_argument("--data-model", required=True, metavar="CONFIG.yaml:CHECKPOINT.pt", help="A DIRECT model.")
    parser.add_argument("--data-root", required=True, type=pathlib.Path, help="The VALIDATION split (h5 files).")
    parser.add_argument("--output", required=True, type=pathlib.Path, help="The CS model YAML to write.")
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=list(DEFAULT_WEIGHTS),
        help="l1-wavelet weights to try (in DIRECT's normalised units).",
    )
    parser.add_argument("--iterations", type=int, default=50, help="Proximal-gradient iterations per reconstruction.")
    parser.add_argument("--wavelet", default="db4", help="Orthogonal wavelet (pywt name).")
    parser.add_argument("--levels", type=int, default=3, help="Wavelet decomposition levels.")
    parser.add_argument("--max-slices", type=int, default=None, help="Use only the first N slices.")
    parser.add_argument("--batch-size", type=int, default=4, help="Slices reconstructed at once.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        chosen = tune(args)
    except (OSError, ValueError) as e:
        print(f"smug cs-tune: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"weight {chosen['weight']:g} (mean PSNR {chosen['psnr']:.2f} dB): {args.output}")
    return 0


def data_model_spec(text: str):
    """``--data-model CONFIG.yaml:CHECKPOINT.pt`` as a model spec named ``data-model``."""
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec

    config, sep, checkpoint = text.rpartition(":")
    if not sep or not config or not checkpoint:
        raise ValueError(
            f"--data-model {text}: expected CONFIG.yaml:CHECKPOINT.pt, a DIRECT model's YAML and its checkpoint "
            "(the CS model uses its masks, coil maps and normalisation)."
        )
    return ModelSpec("data-model", pathlib.Path(config), pathlib.Path(checkpoint))


def tune(args: argparse.Namespace) -> dict:
    """Evaluate every weight on the validation slices and write the YAML; returns the chosen weight and PSNR."""
    import statistics
    import tempfile

    import torch

    from smug_plugin import direct_adapter
    from smug_plugin.cs.config import write_cs_yaml
    from smug_plugin.cs.wavelet_sense import L1WaveletSettings
    from smug_plugin.robustness.metrics import slice_metrics
    from smug_plugin.robustness.reconstructors.cs_baseline import CSReconstructor
    from smug_plugin.robustness.reconstructors.direct_engines import load_reconstructor
    from smug_plugin.robustness.reconstructors.interface import TestTimeSettings
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch

    problem = output_file_problem(args.output)
    if problem is not None:
        raise ValueError(problem)
    candidates = [
        L1WaveletSettings(weight=w, iterations=args.iterations, wavelet=args.wavelet, levels=args.levels)
        for w in args.weights
    ]
    spec = data_model_spec(args.data_model)
    spec.check_files()
    inputs = check_inputs("cs-tune", args)
    use_threads(args.threads)
    with tempfile.TemporaryDirectory() as logs:  # DIRECT's set-up logs; nothing to keep
        data_model = load_reconstructor(spec, "cpu", pathlib.Path(logs))
    dataset = build_dataset(data_model, args.data_root, None, None)
    models = [CSReconstructor(f"w={c.weight:g}", c, data_model) for c in candidates]
    psnrs: list[list[float]] = [[] for _ in models]
    for _, indices in iterate_batches(data_model, dataset, args.batch_size, args.max_slices):
        batch = load_batch(dataset, indices, "cpu")
        resolution = direct_adapter.output_resolution(data_model.cfg.inference.crop, batch)
        target = direct_adapter.scaled_image(batch["target"], batch, resolution)
        for model, values in zip(models, psnrs):
            with torch.no_grad():
                image = model.reconstruct(batch, None, TestTimeSettings())
            values += [m["psnr"] for m in slice_metrics(target, direct_adapter.scaled_image(image, batch, resolution))]
    means = [statistics.fmean(v) for v in psnrs]
    best = max(range(len(candidates)), key=lambda i: means[i])
    tuning = {
        "data_root": str(args.data_root),
        "data_model": args.data_model,
        "slices": len(psnrs[0]),
        "criterion": "mean fastMRI PSNR per slice",
        "psnr_by_weight": {float(c.weight): round(m, 4) for c, m in zip(candidates, means)},
        "data_issues": inputs.data_issues,  # files DIRECT skipped: not among the slices
    }
    header = (
        "l1-wavelet SENSE (classical compressed sensing), weight chosen by smug cs-tune on the validation split.\n"
        f"smug evaluate --model CS={args.output.name} reconstructs with the first DIRECT model's operator."
    )
    write_cs_yaml(args.output, candidates[best], header, tuning)
    return {"weight": candidates[best].weight, "psnr": means[best]}
