"""Display names of models (``--model NAME=...``) as they may reach the file system.

A display name is free text chosen on the command line; DIRECT turns it into a log folder, the reports into card
and heat-map file names. Only `file_stem` of a name ever becomes part of a path: it keeps letters, digits, ``.``,
``_`` and ``-`` and can be neither empty nor ``.``/``..``, so no name can leave the output folder. Two names with the
same stem would write one file, so `check_display_names` refuses them before anything is loaded.
"""

import re

# Stems the commands write beside the models' own files (cards/schema.json).
RESERVED_STEMS = ("schema",)


def file_stem(name: str) -> str:
    """The file-name form of a display name: runs of other characters become ``_`` (the rule of the cards)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return "model" if stem.strip(".") == "" else stem


def check_display_names(names: list[str], option: str = "--model") -> None:
    """Raise ValueError unless the names are distinct and their file stems are distinct and not reserved."""
    seen: dict[str, str] = {}
    for name in names:
        stem = file_stem(name)
        if stem.lower() in RESERVED_STEMS:
            raise ValueError(f"{option} {name}=...: the name '{name}' is reserved for a report file; choose another.")
        if stem.lower() in seen:  # case-insensitive file systems would merge them too
            other = seen[stem.lower()]
            what = "is given twice" if other == name else f"and '{other}' share the file name '{stem}'"
            raise ValueError(
                f"{option}: the name '{name}' {what}; give every model a distinct name of letters, digits, '.', '_' "
                "or '-'."
            )
        seen[stem.lower()] = name
