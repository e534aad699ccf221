"""The adversarial-training study's report (scripts/beyond_adversarial.py) on a synthetic robustness.json, and its
protocol read by the package's loader."""

import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from smug_plugin.robustness.run.protocol import load_protocol

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import beyond_adversarial  # noqa: E402

SLICES = 4


def records(offsets: dict[str, float], seeds: dict[str, tuple[int, ...]]) -> list[dict]:
    """PSNR = 30 + kind offset + 0.1 x seed + 0.01 x slice, under every condition (PGD: 5 dB less)."""
    out = []
    for kind, offset in offsets.items():
        for seed in seeds[kind]:
            for condition in beyond_adversarial.CONDITIONS:
                drop = 5.0 if condition == "main/pgd" else 0.0
                for index in range(SLICES):
                    psnr = 30 + offset + 0.1 * seed + 0.01 * index - drop
                    out.append(
                        {
                            "model": f"{kind} s{seed}",
                            "condition": condition,
                            "file": "f.h5",
                            "slice": index,
                            "psnr": psnr,
                        }
                    )
    return out


def test_differences_to_modl_and_smug_are_the_offsets_and_a_one_seed_model_uses_the_seed_mean():
    offsets = {"MoDL": 0.0, "SMUG": 0.5, "MoDL (adversarial)": 2.0, "SMUG (adversarial)": 1.0}
    seeds = {"MoDL": (0, 1, 2), "SMUG": (0, 1, 2), "MoDL (adversarial)": (0,), "SMUG (adversarial)": (0,)}
    summary = beyond_adversarial.analyse({"records": records(offsets, seeds)})
    assert summary["slices"] == SLICES
    adversarial = summary["kinds"]["MoDL (adversarial)"]["PGD"]
    # seed 0 (+0.0) against MoDL's seed mean (+0.1): 2.0 - 0.1
    assert adversarial["vs MoDL"]["mean"] == pytest.approx(1.9)
    assert adversarial["vs SMUG"]["mean"] == pytest.approx(1.4)
    assert adversarial["seed_sd"] is None
    smug = summary["kinds"]["SMUG"]["clean, 16 unrolls"]
    assert smug["vs MoDL"]["mean"] == pytest.approx(0.5)
    assert smug["seed_sd"] == pytest.approx(np.std([0.0, 0.1, 0.2], ddof=1))
    assert "vs SMUG" not in smug
    text = beyond_adversarial.markdown(summary, "cost table", "python scripts/beyond_adversarial.py")
    assert "| MoDL (adversarial) | " in text and "+1.90 [" in text and "cost table" in text


def test_the_protocol_loads_with_the_study_conditions(tmp_path):
    path = tmp_path / "adversarial_protocol.yaml"
    path.write_text(beyond_adversarial.PROTOCOL)
    protocol = load_protocol(str(path))
    names = {perturbation.name for perturbation in protocol.perturbations}
    assert {"clean", "pgd"} <= names
