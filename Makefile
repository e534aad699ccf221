# Every target sets up first (a cached no-op when nothing changed): see scripts/setup.sh.
PY := .venv/bin/python
SMUG := .venv/bin/smug

.PHONY: setup test test-fastmri gpu-check demo reproduce beyond investigate lint bench clean

setup:
	@bash scripts/setup.sh

# Two pytest-xdist workers (CI's two cores; tests/conftest.py groups the tests); TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder

# Every knee and brain project end to end on fastMRI-shaped files as shipped (ESPIRiT maps, `smug evaluate --protocol
# paper`): minutes per project on a CPU. `make test` runs the same pipelines with cheap maps and a two-condition protocol.
test-fastmri: setup
	SMUG_FASTMRI_E2E=1 $(PY) -m pytest tests/test_fastmri_shapes.py

# On a machine with a CUDA GPU (<= ~8 min): paper-size MoDL/SMUG steps and a fastMRI-shaped evaluation, results/gpu/.
gpu-check: setup
	$(PY) scripts/gpu_check.py

demo: setup
	@bash scripts/demo.sh

reproduce: setup
	$(PY) scripts/reproduce.py

# After `make reproduce`: CS baseline, shifts, small features, the defense around five models, adversarial training
# and Theorem 1 (results/demo/beyond/; wall-clock per step in its README).
beyond: setup
	$(PY) scripts/beyond.py

# After `make reproduce`: the validation-split investigations of results/demo/README.md.
investigate: setup
	$(PY) scripts/investigate.py all

lint: setup
	.venv/bin/ruff check smug_plugin tests benchmarks scripts
	.venv/bin/ruff format --check smug_plugin tests benchmarks scripts

bench: setup
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/pgd_eval.py

clean:
	rm -rf runs/demo data/demo
