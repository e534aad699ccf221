"""The prepared GPU check (``make gpu-check``): paper-size figures of MoDL and SMUG and a fastMRI-shaped evaluation.

On a machine with a CUDA GPU, in at most about 8 minutes, writes ``results/gpu/``:

* ``gpu_check.json`` and ``gpu_check.txt``: the GPU's name, torch, CUDA, DIRECT and smug_plugin versions, and for
  MoDL and SMUG (K = 10) at the papers' size (320 x 320, 15 coils, DIDN 64 x 3, 8 unrolls, batch 1) the time and
  peak GPU memory of a training step and of one PGD step (gradient w.r.t. the k-space, eval mode), in float32 and
  bf16 autocast (the denoiser; data consistency stays float32), without and with the memory options
  (``gradient_checkpointing``, ``checkpoint_each_draw``), next to the estimate of ``smug evaluate``'s check;
* ``evaluate/``: ``smug evaluate --protocol paper`` on 2 slices of the fastMRI-shaped knee fixtures, with a SMUG
  model that ``direct train`` trained for 6 iterations on them (paper-size network).

Without CUDA it prints one line and exits 0. Run from the repository root: ``python scripts/gpu_check.py``.
"""

import json
import pathlib
import platform
import subprocess
import sys
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parent.parent
OUT = REPO / "results" / "gpu"
PAPER = dict(num_steps=8, cg_iters=10, denoiser_hidden_channels=64, denoiser_num_dubs=3, denoiser_num_convs_recon=9)
SHAPE, COILS = (320, 320), 15


def inputs(device):
    import torch

    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 1, SHAPE[1], 1, generator=generator) < 0.25).float()
    mask[..., SHAPE[1] // 2 - 12 : SHAPE[1] // 2 + 12, :] = 1
    mask = mask.expand(1, 1, *SHAPE, 1).contiguous()
    sens = torch.randn(1, COILS, *SHAPE, 2, generator=generator)
    sens = sens / (sens**2).sum(dim=(1, 4), keepdim=True).sqrt()
    kspace = torch.randn(1, COILS, *SHAPE, 2, generator=generator) * mask * 1e-2
    return kspace.to(device), mask.to(device), sens.to(device)


def measure(name, precision, options, step):
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        step()  # warm-up (cuDNN autotuning)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return {"peak_gib": torch.cuda.max_memory_allocated() / 2**30, "seconds": seconds}
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    except Exception as error:  # noqa: BLE001 - every figure is reported, failures included
        return {"error": f"{type(error).__name__}: {error}"}


def model_figures(device) -> list[dict]:
    import torch
    from direct.data.transforms import fft2, ifft2

    from smug_plugin.models.modl import MoDL
    from smug_plugin.models.smug import SMUG
    from smug_plugin.robustness.run.memory import GIB, attack_peak_bytes

    rows = []
    kspace, mask, sens = inputs(device)
    for cls, extra in ((MoDL, {}), (SMUG, {"sigma": 0.01, "num_samples": 10, "noise_seed": 0})):
        for options in ("none", "per-unroll", "per-draw"):
            flags = {"gradient_checkpointing": options != "none", "checkpoint_each_draw": options == "per-draw"}
            if cls is MoDL and options == "per-draw":
                continue
            torch.manual_seed(0)
            model = cls(fft2, ifft2, **PAPER, **extra, **flags).to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
            estimate = attack_peak_bytes(model, SHAPE, COILS, 1, **flags) / GIB
            for precision in ("float32", "bf16"):
                autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")

                def train_step(model=model, optimizer=optimizer, autocast=autocast):
                    model.train()
                    optimizer.zero_grad(set_to_none=True)
                    with autocast:
                        loss = (model(kspace, mask, sens).float() ** 2).mean()
                    loss.backward()
                    optimizer.step()

                def pgd_step(model=model, autocast=autocast):
                    model.eval()
                    delta = torch.zeros_like(kspace, requires_grad=True)
                    with autocast:
                        loss = (model(kspace + delta * mask, mask, sens).float() ** 2).mean()
                    (grad,) = torch.autograd.grad(loss, delta)
                    delta.data += 0.01 * grad.sign()

                for kind, step in (("train_step", train_step), ("pgd_step", pgd_step)):
                    row = {"model": cls.__name__, "options": options, "precision": precision, "figure": kind}
                    row.update(measure(cls.__name__, precision, options, step))
                    if kind == "pgd_step":
                        row["estimate_gib"] = estimate
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            model = optimizer = None  # free the GPU memory before the next model
    return rows


def evaluation(work: pathlib.Path) -> dict:
    import yaml

    from smug_plugin.data.fastmri_shaped import make_fastmri_shaped

    data = work / "knee"
    make_fastmri_shaped(data, "knee", volumes={"train": 1, "val": 1, "test": 1}, slices=2)
    cfg = yaml.safe_load((REPO / "projects" / "smug_knee.yaml").read_text())
    cfg["model"]["denoiser_checkpoint"] = None
    cfg["training"].update(num_iterations=6, validation_steps=6, batch_size=1)
    cfg["training"]["checkpointer"]["checkpoint_steps"] = 6
    cfg["validation"]["datasets"] = cfg["validation"]["datasets"][:1]
    config = work / "smug_knee_gpu.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    bin_dir = pathlib.Path(sys.executable).parent
    started = time.perf_counter()
    train = subprocess.run(
        [str(bin_dir / "direct"), "train", str(work / "runs"), "--cfg", str(config), "--device", "cuda"]
        + ["--num-workers", "4", "--training-root", str(data / "train"), "--validation-root", str(data / "val")],
        capture_output=True,
        text=True,
        check=False,
    )
    result = {"train_rc": train.returncode, "train_seconds": time.perf_counter() - started}
    if train.returncode != 0:
        result["train_tail"] = (train.stdout + train.stderr)[-3000:]
        return result
    checkpoint = work / "runs" / config.stem / "model_5.pt"
    started = time.perf_counter()
    evaluate = subprocess.run(
        [sys.executable, "-m", "smug_plugin.cli.main", "evaluate", "--model", f"smug={config}:{checkpoint}"]
        + ["--protocol", "paper", "--data-root", str(data / "test"), "--output-dir", str(OUT / "evaluate")]
        + ["--max-slices", "2", "--batch-size", "2", "--device", "cuda", "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    result.update(evaluate_rc=evaluate.returncode, evaluate_seconds=time.perf_counter() - started)
    result["evaluate_tail"] = (evaluate.stdout + evaluate.stderr)[-3000:]
    return result


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check.")
        return 0
    import tempfile

    import direct

    import smug_plugin

    OUT.mkdir(parents=True, exist_ok=True)
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "direct": getattr(direct, "__version__", "unknown"),
        "smug_plugin": getattr(smug_plugin, "__version__", "unknown"),
        "python": platform.python_version(),
        "command": "python scripts/gpu_check.py",
    }
    started = time.perf_counter()
    try:
        report["figures"] = model_figures("cuda")
    except Exception:  # noqa: BLE001
        report["figures_error"] = traceback.format_exc()[-3000:]
    with tempfile.TemporaryDirectory() as work:
        try:
            report["evaluation"] = evaluation(pathlib.Path(work))
        except Exception:  # noqa: BLE001
            report["evaluation_error"] = traceback.format_exc()[-3000:]
    report["seconds"] = time.perf_counter() - started
    (OUT / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"{report['gpu']} ({report['gpu_memory_gib']:.0f} GiB), torch {report['torch']}, CUDA {report['cuda']}"]
    for row in report.get("figures", []):
        figure = row.get("error") or f"{row['seconds']:.3f} s, peak {row['peak_gib']:.2f} GiB"
        estimate = f" (estimate {row['estimate_gib']:.2f} GiB)" if "estimate_gib" in row else ""
        lines.append(
            f"{row['model']:6s} {row['options']:10s} {row['precision']:7s} {row['figure']:10s} {figure}{estimate}"
        )
    (OUT / "gpu_check.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
