"""The plugin's DIRECT model namespace ``smug``: ``model_name: smug.<module>.<Class>``.

DIRECT imports ``direct.nn.smug.<module>``, ``direct.nn.smug.config`` and ``direct.nn.smug.smug_engine``; the
import hook (``smug_plugin.direct_hook``) maps those names onto this package. Kept import-free so that listing
the available models (for error messages) does not load torch.
"""

# Read by the import hook to list the available models when a name is unknown.
__direct_models__ = [
    "modl.MoDL",
    "smug.SMUG",
    "smug.SMUGv0",
    "weighted_smug.WeightedSMUG",
    "rs_e2e.RSE2E",
    "didn.DIDN",
]


def unknown_name_error(module: str, name: str) -> AttributeError:
    """The error DIRECT shows for ``model_name: smug.<module>.<name>`` when ``name`` does not exist."""
    available = ", ".join(f"smug.{model}" for model in __direct_models__)
    return AttributeError(f"module {module!r} has no {name!r}. Available plugin models: {available}.")
