"""``smug small-features``: small-feature recovery heat maps (Darestani et al.) for DIRECT, plugin and CS models."""

import argparse
import pathlib

from smug_plugin.cli.foundation import run_command

FULLY_SAMPLED = "small-feature data are simulated from the fully sampled image; give such files"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "small-features",
        help="Small-feature recovery: a bright 3 x 3 window slid over the image, the error inside it per model.",
        description=(
            "Sets a 3 x 3 window of each slice's fully sampled image to the image maximum, on a grid of --stride "
            "pixels, simulates its measurements with the slice's coil maps and mask, reconstructs them with every "
            "--model (NAME=CONFIG.yaml:CHECKPOINT.pt, or NAME=CS.yaml) and writes the mean squared error inside the "
            "window: small_features.json/.md, a heat map per model and slice (heatmaps/, scaled to [0, 1]) and "
            "small_features.png (the first slice)."
        ),
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=CONFIG.yaml:CHECKPOINT.pt",
        help="A model (repeatable): display name, DIRECT YAML and checkpoint, or NAME=CS.yaml.",
    )
    parser.add_argument("--data-root", required=True, type=pathlib.Path, help="h5 files with fully sampled k-space.")
    parser.add_argument(
        "--output-dir", required=True, type=pathlib.Path, help="Folder for the heat maps and the report (locked)."
    )
    parser.add_argument("--stride", type=int, default=4, help="Grid step of the window, in pixels.")
    parser.add_argument("--window-batch", type=int, default=8, help="Windows reconstructed at once.")
    parser.add_argument("--max-slices", type=int, default=1, help="Slices to slide the feature over.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return run_command("small-features", measure, args, fully_sampled=FULLY_SAMPLED)


def measure(args: argparse.Namespace, inputs) -> dict:
    """Load models and data, measure every window of the first ``--max-slices`` slices, write the report."""
    import statistics

    from smug_plugin.robustness.reconstructors.interface import EngineReconstructor
    from smug_plugin.robustness.reconstructors.specs import load_models
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch
    from smug_plugin.robustness.studies.small_features import heat_map, window_errors

    models = load_models(inputs.specs, "cpu", args.output_dir / "direct_logs")
    data_model = next(m for m in models if isinstance(m, EngineReconstructor))
    dataset = build_dataset(data_model, args.data_root, None, None)
    for model in models:
        model.use_dimensionality(dataset.ndim)
    slices, maps = [], {}
    for _, indices in iterate_batches(data_model, dataset, min(args.max_slices, 4), args.max_slices):
        batch = load_batch(dataset, indices, "cpu")
        for index in range(len(indices)):
            origins, errors = window_errors(models, data_model, batch, index, args.stride, args.window_batch)
            height, width = batch["kspace"].shape[2:4]
            where = {"file": pathlib.Path(batch["filename"][index]).name, "slice": int(batch["slice_no"][index])}
            slices.append({**where, "windows": len(origins), "mse": {k: float(v.mean()) for k, v in errors.items()}})
            for name, values in errors.items():
                maps[(name, where["file"], where["slice"])] = heat_map(origins, values, height, width).numpy()
            if len(slices) == 1:
                first = (batch["target"][index].numpy(), where)
    summary = {m.name: statistics.fmean(s["mse"][m.name] for s in slices) for m in models}
    return write_small_features(args, models, slices, summary, maps, first, inputs.data_issues)


def write_small_features(args, models, slices, summary, maps, first, data_issues: list[dict]) -> dict:
    """small_features.json/.md, heatmaps/<model>/<file>_<slice>.png and small_features.png."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smug_plugin.atomic import atomic_path, atomic_write_text
    from smug_plugin.robustness.reconstructors.names import file_stem
    from smug_plugin.robustness.reports.tables import notices

    out = args.output_dir
    facts = {"data_root": str(args.data_root), "stride": args.stride, "window": 3, "slices": slices}
    facts["data_issues"] = data_issues
    document = {"models": [m.describe() for m in models], "mean_window_mse": summary, **facts}
    paths = {"json": out / "small_features.json", "markdown": out / "small_features.md"}
    atomic_write_text(paths["json"], json.dumps(document, indent=2))
    windows = sum(s["windows"] for s in slices)
    lines = [
        "# Small-feature recovery",
        "",
        f"A 3 x 3 window at the image maximum, every {args.stride} pixels ({windows} windows on {len(slices)} "
        f"slice(s) of `{args.data_root}`), data simulated from the modified fully sampled image with the slice's "
        "coil maps and mask. Mean squared error inside the window (DIRECT's normalised units), mean over windows.",
        "",
        *notices(data_issues, []),
        "| Model | mean window MSE |",
        "|---|---|",
        *[f"| {name} | {value:.4g} |" for name, value in summary.items()],
    ]
    atomic_write_text(paths["markdown"], "\n".join(lines) + "\n")
    for (name, file, number), values in maps.items():
        # A folder per model: display names are free text, and only their (distinct) file stems reach the disk.
        path = out / "heatmaps" / file_stem(name) / f"{file_stem(pathlib.Path(file).stem)}_{number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as tmp:
            plt.imsave(tmp, values, cmap="inferno", vmin=0.0, vmax=1.0, format="png")
    image, where = first
    fig, axes = plt.subplots(1, 1 + len(models), figsize=(2.6 * (1 + len(models)), 3), layout="constrained")
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"{where['file']} [{where['slice']}]", fontsize=8)
    for ax, model in zip(axes[1:], models):
        shown = ax.imshow(maps[(model.name, where["file"], where["slice"])], cmap="inferno", vmin=0, vmax=1)
        ax.set_title(f"{model.name}\nmean MSE {summary[model.name]:.3g}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[-1], fraction=0.05, label="window MSE, scaled to [0, 1]")
    paths["figure"] = out / "small_features.png"
    with atomic_path(paths["figure"], suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return paths
