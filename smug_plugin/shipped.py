"""The folders that ship beside the code: ``configs/`` (robustness protocols) and ``projects/`` (DIRECT YAMLs).

Each has one copy, at the top of the repository. The wheel maps them into the package as package data
(``setup.py``: ``smug_plugin/configs``, ``smug_plugin/projects``), so an installed wheel finds them inside the
package and a checkout (editable install or ``PYTHONPATH``) at the repository root beside ``smug_plugin/``.
"""

import importlib.resources
import pathlib
from importlib.resources.abc import Traversable

# The folder names, at the repository root and inside the installed package alike.
CONFIGS = "configs"
PROJECTS = "projects"


def shipped_folder(name: str) -> Traversable:
    """``configs`` or ``projects``: inside the installed package (a wheel), else at the root of the checkout.

    Raises
    ------
    FileNotFoundError
        Neither exists (a wheel built without them).
    """
    inside = importlib.resources.files("smug_plugin").joinpath(name)
    if inside.is_dir():
        return inside
    checkout = pathlib.Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"smug-plugin's '{name}' folder is missing: neither inside the installed package nor beside it in a checkout."
    )


def yaml_files(folder: Traversable, prefix: str = "") -> dict[str, Traversable]:
    """Every ``*.yaml`` under ``folder``, by its path relative to it without the suffix (``demo/modl``), sorted."""
    found: dict[str, Traversable] = {}
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            found.update(yaml_files(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(".yaml"):
            found[prefix + entry.name.removesuffix(".yaml")] = entry
    return dict(sorted(found.items()))
