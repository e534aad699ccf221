"""Studies built on a model or on an evaluation's records, each behind its own command.

`bound` (SMUG's Theorem 1, ``smug bound``), `shifts` (distribution shifts from evaluation records, ``smug shifts``),
`small_features` (small-feature recovery, ``smug small-features``).
"""
