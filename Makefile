# qnnfab — the two commands: `make demo` and `make test` (each sets up .venv first, pip only).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.qnnfab-installed
# The CPU build of torch goes in first, so no dependency pulls a multi-GB CUDA build.
# Elsewhere, point pip at PyTorch's CPU wheel index with TORCH_PIP_ARGS="--index-url URL".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?= -n 2 --durations=15
BOARD ?= icebreaker

.PHONY: setup demo test test-fast fuzz bench bench-quant bench-codebook bench-cluster bench-gradquant \
	bench-optim bench-boards bench-fmnist bench-sim bench-unrolled bench-sq bench-formats-cnn clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/qnnfab flow --board $(BOARD) --out build/demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

# Randomized equivalence far beyond the bounded run in `make test`, on every core: golden =
# Amaranth on every random network, = bulk Verilator on FUZZ_VERILATOR_SHARE of them, until
# FUZZ_NETWORKS networks or FUZZ_MINUTES minutes; SEED=n repeats a run.
FUZZ_NETWORKS ?= 10000
FUZZ_MINUTES ?= 60
FUZZ_VERILATOR_SHARE ?= 0.2
fuzz: setup
	$(PY) -m qnnfab.sim.fuzz --networks $(FUZZ_NETWORKS) --minutes $(FUZZ_MINUTES) \
		--verilator-share $(FUZZ_VERILATOR_SHARE) $(if $(SEED),--seed $(SEED))

# `make bench` runs every benchmark; MNIST=DIR adds MNIST rows to the quantization table.
bench: bench-quant bench-sq bench-codebook bench-cluster bench-gradquant bench-optim bench-boards bench-sim
	$(PY) benchmarks/bench_default.py

bench-quant: setup
	$(PY) benchmarks/bench_quant.py $(if $(MNIST),--mnist $(MNIST))

# Smart Quantization against all-binary, all-ternary, the rule and an exhaustive depth search
# (digits MLP and CNN, 3 seeds, ~30 min); FMNIST=1 adds Fashion-MNIST MLP rows, REUSE=1 keeps
# finished trainings.
bench-sq: setup
	$(PY) benchmarks/bench_sq.py $(if $(FMNIST),--fmnist) $(if $(REUSE),--reuse)

bench-codebook: setup
	$(PY) benchmarks/bench_codebook.py

# Float CNN weights post-training to codebooks (digits and Fashion-MNIST, about an hour; not in
# `make bench`); REUSE=1 takes finished data sets from build/bench/formats_cnn_<data>.json.
bench-formats-cnn: setup
	$(PY) benchmarks/bench_formats_cnn.py $(if $(REUSE),--reuse)

bench-cluster: setup
	$(PY) benchmarks/bench_cluster.py

# Digits and Fashion-MNIST (the table in docs/results.md; ~1 h on 2 cores); MNIST=DIR instead
# of Fashion-MNIST with the IDX files of MNIST.
bench-optim: setup
	$(PY) benchmarks/bench_optim.py $(if $(MNIST),--mnist $(MNIST),--extra-data fashion-mnist) \
		--extra-window 1 --extra-epochs 4 --extra-seeds 0 1 2 --extra-target 0.85 \
		--extra-evals-per-epoch 10 --jobs 2

# Every preset on every board, each a real bitstream with timing met (slow: ~1.5 h);
# MATRIX_BOARDS="icebreaker ulx3s-12f" limits the boards.
bench-boards: setup
	$(PY) benchmarks/bench_boards.py $(if $(MATRIX_BOARDS),--boards $(MATRIX_BOARDS))

# The whole gradquant table of docs/results.md: digits-tnn and digits-cnn at 15 epochs, the
# Fashion-MNIST MLP at 2 (apt-get install dataset-fashion-mnist); about 1,700 runs, ~3.5 h on one
# core. REUSE=1 continues from the runs kept in build/bench/gradquant-runs.jsonl.
bench-gradquant: setup
	$(PY) benchmarks/bench_gradquant.py --presets digits-tnn digits-cnn fmnist-tnn \
		--epochs 15 fmnist-tnn=2 $(if $(REUSE),--resume)

# Fashion-MNIST (apt-get install dataset-fashion-mnist): qnnfab's networks, Brevitas/QONNX imports
# and hls4ml on 28x28 images, bit-exact in Verilator; BUILD=1 adds real ULX3S builds (~20 min each).
bench-fmnist: setup
	$(PY) benchmarks/bench_fmnist.py $(if $(SEEDS),--seeds $(SEEDS)) $(if $(BUILD),--build)

# Simulation speed side by side (Amaranth, Verilator + cocotb, bulk Verilator) on digits-bnn, and
# the whole Fashion-MNIST test split in bulk Verilator where it is installed.
bench-sim: setup
	$(PY) benchmarks/bench_sim.py

# Folded vs unrolled (weights in logic, one inference per clock): digits-tnn and digits-bnn on
# the ULX3S-85F and -25F, the largest net that unrolls on the iCEBreaker; real bitstreams (slow:
# an 85F place and route of an unrolled net takes 15-30 min). REUSE=1 keeps finished builds,
# DA4ML=1 adds da4ml's rows (pip install da4ml).
bench-unrolled: setup
	$(PY) benchmarks/bench_unrolled.py $(if $(REUSE),--reuse) $(if $(DA4ML),--da4ml)

clean:
	rm -rf build .pytest_cache
