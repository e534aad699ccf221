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


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (it declines every name outside ``direct.nn.*`` at once)."""
    if not any(isinstance(finder, DirectPluginFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, DirectPluginFinder())
