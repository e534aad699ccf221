"""The CS model's YAML: a ``cs:`` section with the settings of `L1WaveletSettings`, written by ``smug cs-tune``."""

import dataclasses
import pathlib

import yaml

from smug_plugin.atomic import atomic_write_text
from smug_plugin.cs.wavelet_sense import L1WaveletSettings

CS_SECTION = "cs"
CS_KEYS = tuple(f.name for f in dataclasses.fields(L1WaveletSettings))


def read_model_yaml(path: pathlib.Path) -> dict:
    """A checkpoint-free model's YAML (the CS baseline, a defense) as a mapping, read with the safe loader.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not YAML, or not a mapping; the message names the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"Model YAML not found: {path}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ValueError(f"{path} is not valid YAML{where}: fix the syntax there.") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a mapping of sections: expected a '{CS_SECTION}:' (or 'defense:') section.")
    return document


def load_cs_settings(path: pathlib.Path, section: object = None) -> L1WaveletSettings:
    """The settings of a CS YAML's ``cs:`` section (read from ``path`` unless ``section`` is given).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not YAML, no ``cs:`` mapping, unknown keys or bad values; the message names the file, the key and the fix.
    """
    if section is None:
        section = read_model_yaml(path).get(CS_SECTION)
    if not isinstance(section, dict):
        raise ValueError(
            f"{path} has no '{CS_SECTION}:' section with {', '.join(CS_KEYS)}: a CS model is a YAML written by "
            "`smug cs-tune`, a defense one with a 'defense:' section; a DIRECT model is given as "
            "NAME=CONFIG.yaml:CHECKPOINT.pt."
        )
    unknown = sorted(set(section) - set(CS_KEYS))
    if unknown:
        valid = ", ".join(CS_KEYS)
        raise ValueError(f"{path}: unknown key(s) {unknown} in '{CS_SECTION}:'; the valid keys are {valid}.")
    try:
        return L1WaveletSettings(**section)
    except ValueError as error:
        raise ValueError(f"{path}: in '{CS_SECTION}:', {error}") from None


def write_cs_yaml(path: pathlib.Path, settings: L1WaveletSettings, header: str, tuning: dict) -> None:
    """Write a CS model's YAML: a comment ``header``, the ``cs:`` settings, and how the weight was chosen."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    body = yaml.safe_dump({CS_SECTION: dataclasses.asdict(settings), "tuning": tuning}, sort_keys=False)
    atomic_write_text(path, comment + body)
