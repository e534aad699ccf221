"""Test-time defenses: reconstructors that wrap another model (``--model NAME=defense.yaml``), one module each.

`cyclic_consistency`: the training-free cyclic-consistency defense, with the BPDA gradient for adaptive attacks.
"""
