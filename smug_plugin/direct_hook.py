"""Lets the unmodified DIRECT resolve models that other packages register through entry points.

DIRECT turns ``model.model_name: a.b.C`` into imports of ``direct.nn.a.b``, ``direct.nn.a.config`` and
``direct.nn.a.a_engine`` and has no plugin mechanism. A package registers a namespace in the entry-point group
``direct.nn`` (name ``a``, value: the package holding ``b.py``, ``config.py`` and ``a_engine.py``); this finder,
installed at interpreter start by ``smug_plugin_hook.pth``, maps ``direct.nn.a[.*]`` onto that package so that
``sys.modules["direct.nn.a.b"] is sys.modules["<package>.b"]``.

It must stay cheap: it is imported at every interpreter start, so it imports nothing heavy, and it reads the
entry points only when a ``direct.nn.<name>`` import is not found natively.
"""

import importlib
import importlib.machinery
import sys

ENTRY_POINT_GROUP = "direct.nn"
_PREFIX = "direct.nn."


class PluginModelNotFoundError(ModuleNotFoundError):
    """A ``direct.nn.<namespace>.<module>`` of a registered plugin namespace does not exist."""


def registered_namespaces() -> dict[str, str]:
    """Return ``{namespace: package}`` for every entry point of the ``direct.nn`` group."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_models(namespace: str, package: str) -> list[str]:
    """The model names a plugin package declares in ``__direct_models__`` (e.g. ``["modl.MoDL"]``)."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return []
    return [f"{namespace}.{name}" for name in getattr(module, "__direct_models__", [])]


class _AliasLoader:
    """Loads ``direct.nn.<alias>`` as the already imported target module itself, not as a second copy."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        # The target module is fully initialised by import_module; nothing is left to execute.
        return None


class DirectPluginFinder:
    """Meta-path finder for plugin namespaces below ``direct.nn`` (duck-typed: ``importlib.abc`` costs ~15 ms)."""

    def __init__(self):
        self._namespaces: dict[str, str] | None = None

    def _lookup(self, namespace: str) -> str | None:
        if self._namespaces is None:
            self._namespaces = registered_namespaces()
        return self._namespaces.get(namespace)

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PREFIX):
            return None
        parts = fullname.split(".")
        namespace = parts[2]
        if len(parts) == 3:
            # Native DIRECT modules always win: only a name DIRECT does not have is looked up.
            if importlib.machinery.PathFinder.find_spec(fullname, path) is not None:
                return None
            package = self._lookup(namespace)
            if package is None:
                return None
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(package), is_package=True)
        parent = sys.modules.get(".".join(parts[:3]))
        if parent is None or parent.__name__ == ".".join(parts[:3]):
            return None  # a native DIRECT module
        package = self._lookup(namespace)
        if package is None or parent.__name__ != package:
            return None
        target = ".".join([package, *parts[3:]])
        from importlib.util import find_spec

        if find_spec(target) is None:
            models = ", ".join(available_models(namespace, package)) or "(none declared)"
            raise PluginModelNotFoundError(
                f"No module {fullname!r}: plugin namespace {namespace!r} (package {package!r}) has no module "
                f"{'.'.join(parts[3:])!r}. Available plugin models: {models}.",
                name=fullname,
            )
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target))


PLUGIN_PACKAGE_DIR = __file__.rsplit("/", 1)[0] + "/"
# Exceptions that carry a message written for the user (file, key, fix) when a plugin function raises them.
_INPUT_ERRORS = ("ValueError", "FileNotFoundError", "KeyError", "PluginModelNotFoundError")


def is_plugin_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` is bad input of a plugin model: raised by plugin code, or a config key error of a plugin
    config (OmegaConf names the config class, e.g. ``SMUGConfig``)."""
    if type(exc).__module__ == "omegaconf.errors":  # a YAML error of a plugin config (it names the class)
        return _plugin_config_class(str(exc)) is not None
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    raised_here = last is not None and last.tb_frame.f_code.co_filename.startswith(PLUGIN_PACKAGE_DIR)
    return raised_here and type(exc).__name__ in _INPUT_ERRORS


def direct_input_error(exc: BaseException) -> str | None:
    """A one-line message for bad input of the ``direct`` command that DIRECT answers with a traceback: a ``--cfg``
    YAML that is malformed or holds a ``!!python`` tag (OmegaConf's safe loader refuses it, running nothing), and a
    checkpoint (``--resume``, ``--initialization-checkpoint``) that ``torch.load``'s weights-only loading refuses.
    None for any other error."""
    import pickle

    if type(exc).__module__.startswith("yaml"):
        from smug_plugin.config_errors import describe_config_error

        cfg = _argument("--cfg") or "the --cfg YAML"
        text = describe_config_error(exc)
        if "python/" in str(exc):
            return (
                f"{cfg} holds a YAML tag that would build a Python object ({text}); such tags are refused and nothing "
                "was executed: remove the tag."
            )
        return f"{cfg} is {text}: fix the file."
    if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in str(exc).lower():
        path = _frame_local(exc, "checkpoint_path") or "the checkpoint"
        return (
            f"{path} was refused by torch.load(weights_only=True): loading it would run code stored in it (nothing "
            "was run). If it is a checkpoint you trust, load it once in a trusted session with full (not weights-only) "
            'loading and re-save only its weights: torch.save({"model": checkpoint["model"]}, path).'
        )
    return None


def _argument(option: str) -> str | None:
    argv = sys.argv
    return argv[argv.index(option) + 1] if option in argv[:-1] else None


def _frame_local(exc: BaseException, name: str):
    """The innermost value of local ``name`` in the frames ``exc`` passed through (None: none has it)."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        found = tb.tb_frame.f_locals.get(name, found)
        tb = tb.tb_next
    return found


def _one_line_errors(previous):
    """An excepthook for the ``direct`` command: a plugin's input error is one line, anything else unchanged."""

    def hook(exc_type, exc, tb):
        direct_message = direct_input_error(exc)
        if direct_message is not None:
            sys.stderr.write(f"direct: error: {direct_message}\n")
            return None
        if not is_plugin_input_error(exc):
            return previous(exc_type, exc, tb)
        message = " ".join(str(exc).split())
        config_class = _plugin_config_class(message) if type(exc).__module__ == "omegaconf.errors" else None
        if config_class is not None:
            message = _config_key_hint(config_class, message)
        sys.stderr.write(f"direct: error: {message}\n")
        return None

    return hook


def _plugin_config_class(message: str) -> type | None:
    """The config dataclass of this plugin (``SMUGConfig``) that an OmegaConf error message names, if any."""
    import re

    from smug_plugin.models import config

    ours = {name: cls for name, cls in vars(config).items() if getattr(cls, "__module__", None) == config.__name__}
    return next((ours[name] for name in re.findall(r"\b(\w+Config)\b", message) if name in ours), None)


def _config_key_hint(config_class: type, message: str) -> str:
    """An OmegaConf error of a plugin config as one line: what is wrong, the key, the YAML (``--cfg``), the fix."""
    import dataclasses
    import re

    cfg = _argument("--cfg") or "the --cfg YAML"
    what = message.split(" full_key")[0].rstrip(". ")
    key = re.search(r"full_key: (\S+)", message)
    where = f"`model.{key.group(1)}` in {cfg}" if key else f"the `model:` section of {cfg}"
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    if key and key.group(1) in fields:
        expected = fields[key.group(1)].type
        return f"{what}: {where} must be of type {getattr(expected, '__name__', expected)}."
    return f"{what}: remove or correct {where}; valid keys: {', '.join(sorted(fields))}."


def _is_direct_command() -> bool:
    argv = getattr(sys, "orig_argv", None) or sys.argv
    return len(argv) > 1 and argv[1].rsplit("/", 1)[-1] == "direct"


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (it declines every name outside ``direct.nn.*`` at once), and in the
    ``direct`` command, report a plugin's input errors (bad checkpoint, unknown config key) in one line instead of a
    traceback."""
    if not any(isinstance(finder, DirectPluginFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, DirectPluginFinder())
    if _is_direct_command():
        sys.excepthook = _one_line_errors(sys.excepthook)
        _quiet_refused_checkpoints()


class _NoUnpicklingTraceback:
    """A logging filter: DIRECT's checkpointer logs the traceback of a refused checkpoint before re-raising it
    (hundreds of lines); its one-line message is the excepthook's."""

    def filter(self, record) -> bool:
        import pickle

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, pickle.UnpicklingError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_refused_checkpoints() -> None:
    import logging

    logging.getLogger("Checkpointer").addFilter(_NoUnpicklingTraceback())
