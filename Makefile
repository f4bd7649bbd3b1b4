# lora-native: `make demo` and `make test` work on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# This machine's CPU build of torch is what hosts run against; training issues need it.
TORCH_SPEC ?= torch==2.13.0
FUZZ_SECONDS ?= 30
SANITIZERS ?= address,undefined
ASAN_DIR := build/asan

.PHONY: demo test deps deps-test install build test-unit test-asan fuzz bench clean

demo: install
	$(VENV)/bin/lora-native demo --out demo_output $(if $(CAPTION_MODEL),--caption-model "$(CAPTION_MODEL)") \
		$(if $(CAPTIONER),--captioner $(CAPTIONER))

test: deps-test install build test-unit test-asan fuzz

deps:
	PYTHON=$(PYTHON) bash tools/system_deps.sh

deps-test:
	PYTHON=$(PYTHON) bash tools/system_deps.sh --test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Installed once; `make build` recompiles the extension after C changes.
$(VENV)/.installed: pyproject.toml setup.py | $(VENV)/bin/python
	PYTHON=$(PYTHON) bash tools/system_deps.sh
	$(PIP) install -q --upgrade pip "setuptools>=77" wheel numpy
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q --no-build-isolation -e ".[train,test,ui,caption]"
	touch $@

install: $(VENV)/.installed

build: install
	$(PY) setup.py -q build_ext --inplace

test-unit: build
	$(PY) -m pytest -q --junitxml=build/test-results.xml

# The C core built with AddressSanitizer + UBSan (separate build dir); the suite runs against it,
# except the slow end-to-end training tests (their C paths are covered by the data tests).
test-asan: install
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	cp -r lora_native $(ASAN_DIR)/ && rm -f $(ASAN_DIR)/lora_native/*.so
	LORA_NATIVE_SANITIZE=$(SANITIZERS) $(PY) setup.py -q build_ext --build-lib $(ASAN_DIR) --build-temp $(ASAN_DIR)-tmp
	# Run from inside the ASan build so that its lora_native (first on sys.path) is imported.
	cd $(ASAN_DIR) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 LORA_NATIVE_EXPECT_SANITIZE=$(SANITIZERS) \
	$(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider -m "not slow" --rootdir=$(CURDIR) \
		--junitxml=$(CURDIR)/build/test-asan-results.xml $(CURDIR)/tests

fuzz: deps-test
	bash tests/fuzz/build.sh
	bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(PY)

bench: build
	$(PY) bench/bench_hash.py
	$(PY) bench/bench_dedup.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_train.py --kind sdxl

clean:
	rm -rf build $(ASAN_DIR) $(ASAN_DIR)-tmp lora_native/*.so demo_output tests/fuzz/fuzz_decode tests/fuzz/corpus
