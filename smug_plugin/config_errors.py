"""One-line descriptions of the errors YAML and omegaconf raise, for the configs `smug evaluate` reads.

Both print several lines (a YAML error's context, omegaconf's ``full_key`` / ``object_type`` block); a user needs the
place, the key and what is allowed.
"""

import dataclasses


def describe_config_error(error: Exception) -> str:
    """A one-line description of a YAML or omegaconf error: where it is, which key, and what is valid."""
    import yaml
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"not valid YAML: {error.problem or error.context}{where}"
    if isinstance(error, OmegaConfBaseException):
        message = _first_line(getattr(error, "msg", None) or str(error))
        owner = getattr(error, "object_type", None)
        if isinstance(error, ConfigKeyError) and dataclasses.is_dataclass(owner):
            valid = ", ".join(f.name for f in dataclasses.fields(owner))
            return f"unknown key '{error.full_key}': {message} Valid keys of {owner.__name__}: {valid}."
        key = getattr(error, "full_key", None)
        return f"bad value for '{key}': {message}" if key else message
    return _first_line(str(error)) or type(error).__name__


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
