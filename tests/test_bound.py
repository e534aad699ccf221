"""SMUG's Theorem 1 (`smug bound`): power iterations against a dense eigendecomposition, the constants C_n, the
report on a tiny SMUG and a DIRECT-native model."""

import json
import math

import pytest
import torch
from direct.data.transforms import fft2, ifft2

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.reports.bound_report import model_summary
from smug_plugin.robustness.studies.bound import bound_constants, contraction, operator_norms


def dense_normal_spectrum(operator: MultiCoilOperator, size: int) -> torch.Tensor:
    """Eigenvalues of A^H A as a real 2 size^2 x 2 size^2 matrix (each complex eigenvalue twice)."""
    unknowns = size * size * 2
    basis = torch.eye(unknowns).reshape(unknowns, 1, size, size, 2)
    columns = torch.stack([operator.normal(b).reshape(-1) for b in basis], dim=1).double()
    assert torch.allclose(columns, columns.T, atol=1e-5)  # A^H A is Hermitian
    return torch.linalg.eigvalsh(columns)


@pytest.mark.parametrize("columns", [[0, 3, 4], [0, 1, 2, 4, 5, 6, 7]])
def test_power_iterations_match_a_dense_computation_on_8x8(columns):
    size, lambd = 8, 0.5
    generator = torch.Generator().manual_seed(0)
    sensitivity_map = torch.randn(1, 2, size, size, 2, generator=generator)  # unnormalised: ||A|| != 1
    mask = torch.zeros(1, 1, size, size, 1)
    mask[:, :, :, columns] = 1
    operator = MultiCoilOperator(fft2, ifft2, sensitivity_map, mask)
    spectrum = dense_normal_spectrum(operator, size)

    norms = operator_norms(operator, lambd, torch.zeros(1, size, size, 2), iterations=200, cg_iterations=200)

    assert float(norms.a_norm[0]) ** 2 == pytest.approx(float(spectrum[-1]), rel=1e-4)
    assert float(norms.alpha[0]) == pytest.approx(1 / (lambd + max(float(spectrum[0]), 0.0)), rel=1e-3)


def test_bound_constants_follow_the_theorem():
    a_norm, alpha = 2.0, 0.5
    assert bound_constants(a_norm, alpha, 0.0, 3) == pytest.approx([1.0, 1.0, 1.0])  # x^n depends on y via DC only
    q = 0.5
    expected = [alpha * a_norm * (1 - q**n) / (1 - q) + a_norm * q**n for n in (1, 2, 3)]
    assert bound_constants(a_norm, alpha, q, 3) == pytest.approx(expected)
    assert bound_constants(a_norm, alpha, 1.0, 2) == pytest.approx([alpha * a_norm * n + a_norm for n in (1, 2)])
    assert bound_constants(a_norm, alpha, 1e6, 200)[-1] == math.inf  # vacuous, and no OverflowError
    assert contraction(1.0, 1.0, math.sqrt(2 * math.pi), 1.0) == pytest.approx(1.0)


def test_summary_flags_a_vacuous_bound_and_compares_the_measured_ratio():
    model = {"name": "SMUG", "scope": None, "lambda": 1.0, "sigma": 0.01, "num_steps": 3}
    slices = [{"file": "a.h5", "slice": 0, "a_norm": 1.0, "alpha": 1.0, "denoiser_norm": 5.0}]
    row = model_summary(model, slices, {("a.h5", 0): 0.8})
    assert row["M"] == 10.0
    assert row["q_max"] == pytest.approx(10.0 / (math.sqrt(2 * math.pi) * 0.01))
    assert row["vacuous"] and row["bound_holds_on_all_measured"]
    assert row["measured_ratio_max"] == 0.8 and len(row["c_n"]) == 3


def test_smug_bound_reports_a_plugin_and_a_native_model(tmp_path):
    from robustness_fixtures import make_setup

    from smug_plugin.cli.main import main

    setup = make_setup(tmp_path, ("smug", "varnet"))
    out = tmp_path / "bound"
    args = ["bound", "--data-root", str(setup["data"]), "--output-dir", str(out), "--power-iterations", "20"]
    assert main([*args, *[a for spec in setup["specs"] for a in ("--model", spec)], "--threads", "1"]) == 0

    report = json.loads((out / "bound.json").read_text())
    smug, varnet = report["models"]
    assert smug["scope"] is None and len(smug["c_n"]) == 2 and smug["M"] > 0
    assert smug["q_max"] == pytest.approx(smug["lambda"] * smug["M"] * smug["alpha_max"] / (2.5066283 * 0.05))
    assert "n/a" in (out / "bound.md").read_text() and varnet["scope"].startswith("not an unrolled")
    assert (out / "bound.png").stat().st_size > 0


def test_smug_bound_refuses_an_evaluation_without_records(tmp_path, capsys):
    from smug_plugin.cli.main import main

    (tmp_path / "x.yaml").touch()
    (tmp_path / "y.pt").touch()
    code = main(
        [
            "bound",
            "--model",
            f"a={tmp_path / 'x.yaml'}:{tmp_path / 'y.pt'}",
            "--data-root",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "o"),
        ]
        + ["--evaluation", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smug bound: error:") and len(err.splitlines()) == 1 and "records.jsonl" in err
