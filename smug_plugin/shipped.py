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


def summary(entry: Traversable, limit: int = 100) -> str:
    """The first sentence of a shipped YAML's opening comment (its one-line description), at most ``limit`` chars."""
    lines = []
    for line in entry.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    sentence = text.split(". ")[0].split(": ")[0] if text else "no description"
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


def protocol_help() -> str:
    """Every shipped robustness protocol with its one-line description, for ``--help``."""
    try:
        protocols = yaml_files(shipped_folder(CONFIGS).joinpath("robustness"))
    except FileNotFoundError:
        return "none shipped"
    return "; ".join(f"{name} ({summary(entry)})" for name, entry in protocols.items())
