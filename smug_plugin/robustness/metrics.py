"""Image-quality and robustness metrics, per slice and aggregated.

Per-slice PSNR/SSIM/NMSE are fastMRI's (``fastmri.evaluate``) on a one-slice volume, so the data range is that
slice's target maximum (the per-slice peak the SMUG code uses). Per-volume PSNR and NMSE are exactly fastMRI's
volume metrics (data range = volume maximum), rebuilt from per-slice sums; per-volume SSIM is the mean of the
per-slice values.
"""

import math
from collections import defaultdict

import numpy as np
import torch


def slice_metrics(target: torch.Tensor, prediction: torch.Tensor) -> list[dict]:
    """fastMRI metrics for each slice of a batch of magnitude images (batch, height, width)."""
    from fastmri.evaluate import nmse, psnr, ssim

    out = []
    gt_all = target.detach().cpu().double().numpy()
    pred_all = prediction.detach().cpu().double().numpy()
    for gt, pred in zip(gt_all, pred_all):
        gt, pred = gt[None], pred[None]
        out.append(
            {
                "psnr": float(psnr(gt, pred)),
                "ssim": float(ssim(gt, pred)[0]),
                "nmse": float(nmse(gt, pred)),
                "sse": float(((gt - pred) ** 2).sum()),
                "target_sq": float((gt**2).sum()),
                "target_max": float(gt.max()),
                "pixels": int(gt.size),
            }
        )
    return out


def psnr_per_slice(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """fastMRI's per-slice PSNR (data range = the slice's target maximum, float64) of magnitude images
    (batch, height, width) in torch, as :func:`slice_metrics` reports it."""
    target, prediction = target.detach().double(), prediction.detach().double()
    mse = ((target - prediction) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(target.flatten(1).amax(1) ** 2 / mse)


def robustness_errors(
    perturbed: torch.Tensor, clean: torch.Tensor, delta: torch.Tensor, measured: torch.Tensor | None = None
) -> list[dict]:
    """||f(y+delta) - f(y)|| per slice, relative to ||f(y)||, the amplification ratio to ||delta||, and (given the
    measured k-space y) the perturbation's relative l2 size ||delta|| / ||y||."""
    diff = (perturbed - clean).detach().flatten(1).norm(dim=1)
    ref = clean.detach().flatten(1).norm(dim=1)
    dnorm = delta.detach().flatten(1).norm(dim=1)
    errors = [
        {
            "rob_err": float(d),
            "rob_err_rel": float(d / r) if r > 0 else math.nan,
            "rob_ratio": float(d / n) if n > 0 else math.nan,
            "delta_l2": float(n),
            "delta_linf": float(m),
        }
        for d, r, n, m in zip(diff, ref, dnorm, delta.detach().flatten(1).abs().amax(dim=1))
    ]
    if measured is not None:
        for error, n, y in zip(errors, dnorm, measured.detach().flatten(1).norm(dim=1)):
            error["delta_rel_l2"] = float(n / y) if y > 0 else math.nan
    return errors


def summarize(values: list[float]) -> dict:
    """Mean, sample standard deviation and the 95% t-interval half-width over slices."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1) * std / math.sqrt(n))
    else:
        half = math.nan
    return {"n": n, "mean": float(x.mean()), "std": std, "ci95": half}


def volume_metrics(records: list[dict]) -> dict[str, dict]:
    """fastMRI volume PSNR/NMSE (and mean SSIM) per file from per-slice records."""
    by_file: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_file[r["file"]].append(r)
    out = {}
    for name, recs in by_file.items():
        sse = sum(r["sse"] for r in recs)
        pixels = sum(r["pixels"] for r in recs)
        peak = max(r["target_max"] for r in recs)
        out[name] = {
            "slices": len(recs),
            "psnr": float(20 * math.log10(peak) - 10 * math.log10(sse / pixels)) if sse > 0 else math.inf,
            "nmse": float(sse / sum(r["target_sq"] for r in recs)),
            "ssim": float(np.mean([r["ssim"] for r in recs])),
        }
    return out
