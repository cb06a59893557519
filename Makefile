# The two commands of the README: `make demo` and `make test`. Both install what they need first.
.PHONY: setup demo test build

setup:
	bash scripts/setup.sh

demo: setup
	node --import tsx demo/run.ts

test: setup
	npm run --silent typecheck
	npm run --silent lint
	npm run --silent lint:deps
	npm run --silent test:unit
	npm run --silent test:integration

build:
	npm run build

# The benchmark harness (bench/run.ts): `bench` is the full run (about 10 minutes on 2 cores; run it
# on an otherwise idle machine), `bench-quick` a smoke test that fails unless every case ran. Both
# install wrk and fortio first and write bench/results/<timestamp>.json and bench/results/latest.md.
.PHONY: bench bench-quick

bench: setup
	bash scripts/build-bench-tools.sh
	node --import tsx bench/run.ts

bench-quick: setup
	bash scripts/build-bench-tools.sh
	node --import tsx bench/run.ts --quick
