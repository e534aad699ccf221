"""The machinery of one ``smug evaluate`` run: what to run, in what order, where the numbers go.

`protocol` and `sweeps` (the conditions), `batches` (DIRECT's inference data), `loop` (batches x conditions x models
-> per-slice records), `records` and `run_identity` (append-only records, resume, the run's identity),
`sharding`, `distributed`, `progress` and `output_lock` (ranks, their shares, progress lines, one run per folder).
"""
