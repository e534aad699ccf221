"""The floor plan of the package (docs/architecture.md): every module imports only from its own layer or the ones
below it, and the training engines reach the evaluation through one narrow interface.

Reads the source with `ast` (every import, those inside functions too); imports nothing of the package.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "smug_plugin"
R = "smug_plugin.robustness"

# Layer of a module: the entry with the longest matching prefix. Lower layers never import higher ones.
LAYERS = {
    "smug_plugin": 0,  # the package's __init__ only (kept free of imports)
    "smug_plugin.units": 0,
    "smug_plugin.operators": 1,
    "smug_plugin.atomic": 1,
    "smug_plugin.provenance": 1,
    "smug_plugin.shipped": 1,
    "smug_plugin.config_errors": 1,
    "smug_plugin.direct_adapter": 1,
    "smug_plugin.losses": 2,
    "smug_plugin.cs": 2,
    "smug_plugin.data": 2,
    "smug_plugin.models": 3,
    R: 4,  # the package's __init__
    f"{R}.threat_model": 4,
    f"{R}.activity": 4,
    f"{R}.metrics": 4,
    f"{R}.reconstructors": 5,
    f"{R}.seeds": 5,
    f"{R}.attacks": 6,
    f"{R}.defenses": 7,
    f"{R}.validation": 7,
    f"{R}.reconstructors.specs": 8,  # builds every kind of model, defended ones included
    f"{R}.run": 9,
    f"{R}.studies": 10,
    f"{R}.reports": 11,
    "smug_plugin.cli": 12,
    "smug_plugin.direct_hook": 12,  # DIRECT's entry into the plugin (its models' config errors)
}
# The one upward edge: the training engines' PGD (robust validation, adversarial training), through these names only.
NARROW_INTERFACE = {
    ("smug_plugin.models", f"{R}.validation"): {"AdversarialTraining", "RobustValidation", "attacked_kspace"}
}


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


MODULES = modules()


def layer_key(module: str) -> str | None:
    """The LAYERS entry of ``module``; "smug_plugin" matches only the package itself."""
    keys = [k for k in LAYERS if module == k or (k != "smug_plugin" and module.startswith(k + "."))]
    return max(keys, key=len, default=None)


def imports(path: pathlib.Path) -> list[tuple[str, set[str]]]:
    """(imported module, names taken from it) for every import of the package in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, set()) for a in node.names if a.name.split(".")[0] == "smug_plugin"]
        elif (
            isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "smug_plugin"
        ):
            for alias in node.names:  # `from package import module` imports the module
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, set()) if submodule in MODULES else (node.module, {alias.name}))
    return found


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_key(m) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_its_own(module):
    own = LAYERS[layer_key(module)]
    upward = []
    for target, names in imports(MODULES[module]):
        key = layer_key(target)
        assert key is not None, f"{module} imports {target}, which is no module of the package"
        if LAYERS[key] <= own:
            continue
        allowed = next((v for (src, dst), v in NARROW_INTERFACE.items() if layer_key(module).startswith(src)), None)
        if allowed is not None and key == f"{R}.validation" and names and names <= allowed:
            continue
        upward.append(f"{target} (layer {LAYERS[key]})")
    assert upward == [], f"{module} (layer {own}) reaches up to {upward}"


def test_units_reach_nothing_of_the_package():
    assert imports(MODULES["smug_plugin.units"]) == []


def test_the_training_engines_see_only_the_narrow_robust_validation_interface():
    seen = {
        (module, target): names
        for module, path in MODULES.items()
        if module.startswith("smug_plugin.models")
        for target, names in imports(path)
        if target.startswith(R)
    }
    assert seen and {target for _, target in seen} == {f"{R}.validation"}
    assert set().union(*seen.values()) <= NARROW_INTERFACE[("smug_plugin.models", f"{R}.validation")]
    assert set(NARROW_INTERFACE[("smug_plugin.models", f"{R}.validation")]) == set(
        ast.literal_eval(
            next(
                node.value
                for node in ast.parse((PACKAGE / "robustness" / "validation.py").read_text()).body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
            )
        )
    )
