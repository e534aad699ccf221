"""Bundled data files (a package so that ``importlib.resources`` and ``package_data`` find them)."""
