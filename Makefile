# The two commands of the README: `make demo` and `make test`. Both install what they need first.
.PHONY: setup demo test build

setup:
	bash scripts/setup.sh

demo: setup
	node --import tsx demo/run.ts

test: setup
	npm run --silent typecheck
	npm run --silent lint:cycles
	npm run --silent test:unit
	npm run --silent test:integration

build:
	npm run build
