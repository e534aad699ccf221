"""Robustness protocols shipped with the package, named by file stem (``smug evaluate --protocol paper``)."""
