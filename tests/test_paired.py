"""Paired differences over seeds x slices: the bootstrap interval covers what it should, and the verdicts."""

import numpy as np
import pytest

from smug_plugin.robustness.reports.paired import paired_difference


def test_a_constant_shift_is_resolved_with_a_tight_interval():
    rng = np.random.default_rng(1)
    reference = rng.normal(20, 1, size=(3, 12))
    result = paired_difference(reference + 2.0, reference)
    assert result.mean == pytest.approx(2.0) and result.low == pytest.approx(2.0) and result.high == pytest.approx(2.0)
    assert result.verdict() == "above (resolved)" and result.above == 36 and result.seed_sd == pytest.approx(0)


def test_seed_noise_widens_the_interval_and_one_seed_pairs_with_the_seed_mean():
    rng = np.random.default_rng(2)
    reference = rng.normal(20, 1, size=(3, 12))
    offsets = np.array([[-1.5], [0.0], [1.5]])  # a seed effect, the same on every slice
    model = reference + offsets + rng.normal(0, 0.1, size=(3, 12))
    result = paired_difference(model, reference)
    assert result.low < 0 < result.high and result.seed_sd == pytest.approx(1.5, abs=0.1)
    assert "not resolved" in result.verdict()
    single = paired_difference(reference[:1] + 0.3, reference)
    np.testing.assert_allclose(single.mean, (reference[0] + 0.3 - reference.mean(axis=0)).mean())
    assert single.seeds == 1 and single.seed_sd is None


def test_small_differences_inside_the_resolution_say_how_small():
    rng = np.random.default_rng(3)
    reference = rng.normal(20, 1, size=(3, 12))
    result = paired_difference(reference + rng.normal(0, 0.2, size=(3, 12)), reference)
    assert result.verdict().startswith("no difference larger than")
    with pytest.raises(ValueError, match="12 and 11 slices"):
        paired_difference(reference, reference[:, :11])
