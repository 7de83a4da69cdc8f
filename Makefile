# Everyday commands. Each first sets up .venv (tools/setup_env.sh) when it is
# missing or older than what it is built from; then it takes seconds.
PYTHON := .venv/bin/python
STAMP := .venv/.mmhire-setup

.PHONY: setup demo demo-seg test test-heavy bench

setup: $(STAMP)

$(STAMP): tools/setup_env.sh setup.py mmhire/dependencies.py $(wildcard requirements/*.txt)
	bash tools/setup_env.sh
	@touch $@

demo: $(STAMP)  ## Mask R-CNN + Hire-MLP-Tiny on the built-in data: box and mask AP, a picture
	$(PYTHON) tools/demo.py detection

demo-seg: $(STAMP)  ## Semantic FPN + Hire-MLP-Tiny: single- and multi-scale mIoU
	$(PYTHON) tools/demo.py segmentation

test: $(STAMP)  ## the test suite, CPU only (CI runs exactly this)
	$(PYTHON) -m pytest -q

test-heavy: $(STAMP)  ## the checks left out of `make test` (more demos, a pip resolution)
	$(PYTHON) -m pytest -q -m heavy

bench: $(STAMP)  ## speed and memory against the reference and mmdet's backbones
	$(PYTHON) tools/analysis/benchmark.py
