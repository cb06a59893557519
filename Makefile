# The two commands of the README: `make demo` and `make test`. Both install what they need first.
.PHONY: setup demo test build

setup:
	bash scripts/setup.sh

demo: setup
	node --import tsx demo/run.ts

# The whole suite: on the machine's Node 20 and HAProxy 2.6, then the unit and integration suites
# again on Node 24 and on HAProxy 3.0 (both installed into .deps/ by setup), the systemd unit and
# the npm package.
test: setup
	npm run --silent typecheck
	npm run --silent lint
	npm run --silent lint:deps
	npm run --silent test:unit
	npm run --silent test:integration
	bash scripts/check-deploy.sh
	bash scripts/check-package.sh
	$(MAKE) --no-print-directory test-node24 test-haproxy30

NODE24_PATH := $(CURDIR)/.deps/node-24/bin:$(PATH)
HAPROXY30_BIN := $(CURDIR)/.deps/haproxy-3.0/bin/haproxy

.PHONY: test-node24 test-haproxy30
test-node24:
	PATH="$(NODE24_PATH)" node --version
	PATH="$(NODE24_PATH)" npm run --silent test:unit
	PATH="$(NODE24_PATH)" npm run --silent test:integration

test-haproxy30:
	"$(HAPROXY30_BIN)" -v | head -n1
	HAPROXY_BIN="$(HAPROXY30_BIN)" npm run --silent test:unit
	HAPROXY_BIN="$(HAPROXY30_BIN)" npm run --silent test:integration

build:
	npm run build

# The benchmark harness (bench/run.ts): `bench` is the full run (about 10 minutes on 2 cores; the time
# budget is in bench/profile.ts; run it on an otherwise idle machine), `bench-quick` a smoke test that
# fails unless every case ran, `bench-memory` the daemon's memory idle and under 10 minutes of changes
# (BENCH_CHURN_S=3600 for an hour; BENCH_CA_EVERY_S=0 without its CA rotations). They install wrk and fortio first and write
# bench/results/<timestamp>.json (and, but for bench-memory, bench/results/latest.md).
.PHONY: bench bench-quick bench-memory

bench: setup
	bash scripts/build-bench-tools.sh
	node --import tsx bench/run.ts

bench-quick: setup
	bash scripts/build-bench-tools.sh
	node --import tsx bench/run.ts --quick

bench-memory: setup
	bash scripts/build-bench-tools.sh
	BENCH_CHURN_S=$${BENCH_CHURN_S:-600} node --import tsx bench/run.ts --cases daemon-memory
