"""Tiny fastMRI-format data, DIRECT YAMLs and freshly initialised DIRECT-native checkpoints for robustness tests."""

import pathlib

from smug_plugin.data.phantom import write_phantom_h5
from smug_plugin.robustness.reconstructors.direct_engines import save_fresh_checkpoint

MODELS = {
    "varnet": {
        "model_name": "varnet.varnet.EndToEndVarNet",
        "num_layers": 2,
        "regularizer_num_filters": 4,
        "regularizer_num_pull_layers": 1,
    },
    "rim": {"model_name": "rim.rim.RIM", "hidden_channels": 4, "length": 2, "depth": 1},
    # A plugin model in the papers' units: it divides each slice by s = max(|Re|, |Im|) of A^H y (threat model tests).
    "modl_paper": {
        "model_name": "smug.modl.MoDL",
        "num_steps": 2,
        "cg_iters": 3,
        "denoiser_hidden_channels": 4,
        "denoiser_num_dubs": 1,
        "denoiser_num_convs_recon": 1,
        "intensity_scale": "paper",
    },
    # A plugin model (randomized): the test-time settings go through its network's `test_time`.
    "smug": {
        "model_name": "smug.smug.SMUG",
        "num_steps": 2,
        "cg_iters": 3,
        "denoiser_hidden_channels": 4,
        "denoiser_num_dubs": 1,
        "denoiser_num_convs_recon": 1,
        "sigma": 0.05,
        "num_samples": 2,
    },
}


def write_direct_yaml(path: pathlib.Path, model: str, acceleration: int = 4, **model_overrides) -> pathlib.Path:
    from omegaconf import OmegaConf

    cfg = {
        "model": {**MODELS[model], **model_overrides},
        "inference": {
            "batch_size": 2,
            "crop": None,
            "dataset": {
                "name": "FastMRI",
                "transforms": {
                    "cropping": {"crop": None, "image_center_crop": False},
                    "sensitivity_map_estimation": {"estimate_sensitivity_maps": True, "sensitivity_maps_gaussian": 0.7},
                    "normalization": {"scaling_key": "masked_kspace"},
                    "masking": {"name": "FastMRIRandom", "accelerations": [acceleration], "center_fractions": [0.08]},
                    "padding_eps": 0.0001,
                },
            },
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), path)
    return path


def make_setup(root: pathlib.Path, models: tuple[str, ...] = ("varnet", "rim")) -> dict:
    """Data directory and one ``NAME=CONFIG:CHECKPOINT`` spec per model under `root`."""
    data = write_phantom_h5(root / "data")
    specs = []
    for i, name in enumerate(models):
        cfg = write_direct_yaml(root / name / "config.yaml", name)
        ckpt = save_fresh_checkpoint(cfg, root / name, seed=i)
        specs.append(f"{name}={cfg}:{ckpt}")
    return {"data": data, "specs": specs}


def loaded_setup(root: pathlib.Path, models: tuple[str, ...]) -> tuple[dict, dict]:
    """The models of :func:`make_setup` loaded as reconstructors, and the first batch (2 slices) of the data."""
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch

    setup = make_setup(root, models)
    loaded = {}
    for spec in setup["specs"]:
        model = load_reconstructor(ModelSpec.parse(spec), "cpu", root / "logs")
        loaded[model.name] = model
    first = next(iter(loaded.values()))
    dataset = build_dataset(first, setup["data"], None, None)
    for model in loaded.values():
        model.use_dimensionality(dataset.ndim)
    _, indices = next(iterate_batches(first, dataset, 2, None))
    return loaded, load_batch(dataset, indices, "cpu")


CLEAN_ENTRY = {"name": "clean", "kind": "clean", "family": "none", "transfer_from": None, "description": "clean"}


def model_entry(name: str, ckpt_sha: str = "c0", **settings) -> dict:
    """A model of an evaluation manifest (`run_identity.model_identity`), settings as given."""
    return {"name": name, "config_sha": "y0", "ckpt_sha": ckpt_sha, "described": {}, "settings": settings}


def write_evaluation(
    folder: pathlib.Path,
    records: list[dict],
    models: list[dict] | None = None,
    perturbations: list[dict] | None = None,
    complete: bool = True,
    data_files: list | None = None,
) -> pathlib.Path:
    """A finished smug evaluate folder as the downstream commands read it: manifest.json, robustness.json (its run
    complete or not) and records.jsonl, one unit per (condition, batch) of ``records``, markers naming the run."""
    import json

    from smug_plugin.robustness.run.records import MANIFEST, RECORDS, RECORDS_FORMAT, RecordStore, run_id

    folder.mkdir(parents=True)
    names = sorted({r["model"] for r in records})
    manifest = {
        "protocol": {"name": "test", "seed": 0, "perturbations": perturbations or [CLEAN_ENTRY], "sweeps": {}},
        "models": models if models is not None else [model_entry(n) for n in names],
        "data_root": "data",
        "data_files": data_files or [],
        "seed": 0,
        "batch_size": 4,
        "max_slices": None,
        "records_format": RECORDS_FORMAT,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))
    store = RecordStore(folder / RECORDS, run=run_id(manifest))
    units: dict[tuple, list[dict]] = {}
    for r in records:
        record = {"data": "default", "batch": "0", **r}
        units.setdefault((record["data"], record["condition"], record["batch"]), []).append(record)
    for unit, unit_records in units.items():
        store.append_unit(unit, unit_records)
    (folder / "robustness.json").write_text(json.dumps({"run": {"complete": complete}}))
    return folder
