# Regent: the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo

.PHONY: run test unit-test policy-test e2e helm-check bench lint fmt build release image fuzz

## run: the whole system locally on its embedded defaults (git repo, bundle server, sidecar, Envoy, upstreams)
run:
	@if [ -x e2e/run.sh ]; then exec e2e/run.sh; else echo "make run: the local harness (e2e/run.sh) is not built yet"; fi

## test: every test: unit and integration tests, policy tests, end-to-end scenarios, chart validation
test: unit-test policy-test e2e helm-check

unit-test:
	$(CARGO) test --workspace --exclude regent-e2e --all-targets

policy-test:
	@if [ -x policies/test.sh ]; then policies/test.sh; else echo "policy-test: no policy library yet"; fi

e2e:
	@if [ -x e2e/e2e.sh ]; then e2e/e2e.sh; else echo "e2e: no end-to-end scenarios yet"; fi

helm-check:
	@if [ -x charts/check.sh ]; then charts/check.sh; else echo "helm-check: no chart yet"; fi

## bench: throughput, latency, memory benchmarks; figures go in BENCHMARKS.md
bench:
	@if [ -x bench/run.sh ]; then bench/run.sh; else echo "bench: no benchmarks yet"; fi

## image: container images of both binaries (Dockerfiles where a builder exists, else an offline OCI layout)
image:
	tools/image.sh

## fuzz: the bundle reader's fuzz targets (FUZZ_SECONDS per target, default 60)
fuzz:
	tools/fuzz.sh

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --workspace --release
