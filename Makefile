# Regent: the two set-up commands are `make run` and `make test` (see README.md); every target is
# described in CONTRIBUTING.md. Each target calls its script directly, so a missing script fails it.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo

.PHONY: run test unit-test policy-test e2e helm-check bench lint fmt build release image fuzz

## run: the whole system locally on its embedded defaults (git repo, bundle server, sidecar, Envoy, upstreams)
run:
	exec e2e/run.sh

## test: every test: unit and integration tests, policy tests, end-to-end scenarios, chart validation
test: unit-test policy-test e2e helm-check

unit-test:
	$(CARGO) test --workspace --exclude regent-e2e --all-targets

policy-test:
	policies/test.sh

e2e:
	e2e/e2e.sh

helm-check:
	charts/check.sh

## bench: throughput, latency, memory benchmarks; figures go in BENCHMARKS.md
bench:
	bench/run.sh

## image: container images of both binaries (Dockerfiles where a builder exists, else an offline OCI layout)
image:
	tools/image.sh

## fuzz: the bundle reader's fuzz targets (FUZZ_SECONDS per target, default 60)
fuzz:
	tools/fuzz.sh

## lint: formatting, clippy and rustdoc (broken links, bare URLs) with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --workspace --release
