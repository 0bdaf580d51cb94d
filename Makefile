# linkloop: the two commands are `make run` and `make test`.
SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_NOTE := 65682d4500000000380339a5
# The gateway binary, in cargo's target directory (CARGO_TARGET_DIR when set).
LINKLOOP := $(or $(CARGO_TARGET_DIR),target)/release/linkloop
DEMO_URL := https://item.taobao.com/item.htm?spm=a230r.1.14.20.4a8966187RqiPv&id=533000737918&ns=1&abbucket=3\#detail

.PHONY: run test deps build bench compare fmt lint

## Install what the gateway and tests need (redis-server; curl for the CLI test) when missing.
deps:
	@missing=""; for p in redis-server:redis-server curl:curl; do \
	  command -v $${p%%:*} >/dev/null 2>&1 || missing="$$missing $${p##*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing (apt-get)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 1; }

build: deps
	cargo build --release --bin linkloop

## Build, start the gateway (with its own redis-server), print a demo link and the curl to click it.
## `make run CONFIG=linkloop.toml` starts it with a config file (merchants, keys, …).
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG))
run: build
	@link=$$($(LINKLOOP) mint $(CONFIG_ARG) --note $(DEMO_NOTE) --creator demo_creator --url '$(DEMO_URL)'); \
	echo; echo "Demo tracked link (Taobao item 533000737918, note $(DEMO_NOTE)):"; \
	echo "  $$link"; echo "Click it as a phone browser (curl's own User-Agent is recorded as a bot, not a click):"; \
	echo "  curl -i -A 'Mozilla/5.0 (iPhone) Mobile' '$$link'"; \
	echo "Admin token for the API: admin_token in the config, else in $${LINKLOOP_DATA_DIR:-./data}/dev-keys.toml"; echo
	exec $(LINKLOOP) serve $(CONFIG_ARG)

## Formatting, lints, and every test (unit, integration against real redis-server, doc tests).
test: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

## Criterion micro-benchmarks of the hot path and the callback (figures: docs/performance.md).
bench: deps
	cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3

## nginx `return 302` vs linkloop (redirect, open-loop p99 at 50%, callback) with wrk and the load tester.
compare: deps
	@command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null; }
	loadtest/scripts/compare.sh 10 64

fmt:
	cargo fmt --all
