# Shortcuts for scripts/dev.sh (which does the set-up on first use).
.PHONY: demo test lint setup bench
demo:
	bash scripts/dev.sh demo
test:
	bash scripts/dev.sh test
lint:
	bash scripts/dev.sh lint
setup:
	bash scripts/setup.sh
bench:
	bash scripts/dev.sh run python bench/run_all.py
