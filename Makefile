# Dockyard: `make run` brings the portal up; `make test` runs the whole suite.
.PHONY: run test lint format install clean

run:
	@scripts/run.sh

test:
	@scripts/test.sh $(ARGS)

lint:
	@scripts/ensure-venv.sh dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	@scripts/ensure-venv.sh dev
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

install:
	@scripts/ensure-venv.sh dev

clean:
	rm -rf .venv var/broker var/cache var/celery-results var/staticfiles
