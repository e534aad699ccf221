"""Reports of a robustness run, computed from its records only: tables (json, csv, md) and figures."""
