"""The ``smug`` command line: ``smug data demo``, ``smug evaluate``."""
