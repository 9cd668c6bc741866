# learning-progress developer commands.  `make` alone lists them.
#
# Services (PostgreSQL, NATS with JetStream, Temporal dev server) come from
# scripts/stack.sh, which reuses running ones or starts its own under .stack/
# and writes their addresses to .stack/env; recipes that need them run through
# scripts/with-stack-env.sh, which sources that file.

.DEFAULT_GOAL := help
SHELL := /bin/bash

WITH_ENV := scripts/with-stack-env.sh
# Extra arguments for the test runner, e.g. make test TEST_ARGS='-- --nocapture'
TEST_ARGS ?=

.PHONY: help stack stop run test lint bench chaos fuzz-check

help: ## List the targets
	@echo "learning-progress: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 13

stack: ## Ensure PostgreSQL, NATS (JetStream) and Temporal run; write .stack/env
	@scripts/stack.sh

stop: ## Stop the services that 'make stack' started itself
	@scripts/stack.sh stop

# `make run` is the laptop setup: development tokens (`learning-progress token`) are accepted
# unless a real SUPABASE_JWT_SECRET / SUPABASE_JWKS is given.
run: stack ## Run the service (release build; `all` migrates the database first)
	LEARNING_PROGRESS_DEV=$${LEARNING_PROGRESS_DEV:-1} $(WITH_ENV) cargo run --release -- all

test: stack ## Run the tests against the local stack (nextest if installed); TEST_ARGS=...
	@if cargo nextest --version >/dev/null 2>&1; then \
	  set -x; $(WITH_ENV) cargo nextest run --workspace --no-fail-fast $(TEST_ARGS); \
	else \
	  set -x; $(WITH_ENV) cargo test --workspace --no-fail-fast $(TEST_ARGS); \
	fi

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fuzz-check: ## Check that the fuzz targets (fuzz/, a workspace of its own) still compile
	cargo check --manifest-path fuzz/Cargo.toml --bins

chaos: stack ## Run the service under real faults and check every command; MODE=quick|full (RELIABILITY.md)
	@scripts/chaos.sh

bench: ## Run the benchmarks (scripts/bench.sh)
	@if [ -x scripts/bench.sh ] || [ -f scripts/bench.sh ]; then \
	  $(MAKE) --no-print-directory stack && $(WITH_ENV) bash scripts/bench.sh; \
	else \
	  echo "bench: not built yet (scripts/bench.sh does not exist)"; \
	fi
