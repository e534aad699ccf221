"""The seeds of a robustness run, derived from what a piece of work is, never from when it runs.

A seed is a hash of the run seed and of names: the condition, the data the unit's slices come from and its batch,
and for a clean reconstruction the model and its test-time settings. Nothing that depends on the order of work (which
condition of a batch runs first, what an interrupted run had finished, which other models are evaluated) enters, so
``--resume`` and an evaluation of a subset of the models reproduce every number of an uninterrupted run.
"""

import json
import zlib

from smug_plugin.robustness.reconstructors.interface import TestTimeSettings

SEED_MODULUS = 2**31 - 1


def derive_seed(base: int, *names: str) -> int:
    """A seed in [0, 2^31 - 1) from the run seed and the names of what it is for (stable across Python runs)."""
    return (base * 1_000_003 + zlib.crc32("|".join(names).encode())) % SEED_MODULUS


def clean_seed(base: int, model: str, settings: TestTimeSettings, data: str, batch: str) -> int:
    """Noise seed of the clean reconstruction of ``model`` under ``settings`` on one batch.

    The clean reconstruction is shared by every condition of the batch with these settings (as its output, the
    attack target for ``target: clean`` and the reference of ``rob_err``), so its seed names none of them.

    Parameters
    ----------
    base : int
        The run seed.
    model : str
        Display name of the model.
    settings : TestTimeSettings
        The condition's test-time settings (without a noise seed).
    data : str
        The data the batch comes from (``default``, ``acc=8``: masks depend on it).
    batch : str
        The batch's key (its slices).
    """
    # The threat model's normalisation does not change a clean reconstruction: conditions that differ only in it
    # share it (and the seeds stay those of runs made before the setting existed).
    named = {k: v for k, v in settings.requested().items() if k != "normalisation"}
    return derive_seed(base, "clean", json.dumps(named, sort_keys=True), model, data, batch)
