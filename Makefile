# rds-backup: the daily loop. `make local` and `make test` install what they need themselves.
.PHONY: bootstrap local test test-fast lint synth

export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_UNSUPPORTED_NODE_VERSION := 1
# jsii prints an end-of-life banner for Node 20 unless its major version is listed here
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

bootstrap:
	@bash scripts/bootstrap.sh

# The whole product on its embedded default: moto + a local PostgreSQL, no AWS account.
local: bootstrap
	python -m rdsbackup_local.demo

# Every test: unit, infrastructure (synth, cfn-lint, cdk-nag), worker (real PostgreSQL), end to end; then
# the security scanners over both configs' templates (`make security`, below). CI runs exactly this.
test: bootstrap
	ruff check .
	python -m pytest -q -p no:cacheprovider -n 2
	@$(MAKE) --no-print-directory security

lint:
	ruff check .

synth: bootstrap
	npx cdk synth --quiet -c rdsbackup:bundle=false

# issue 4's performance figures (bench/run.py, ~20 min on 2 cores): installs restic, borgbackup, zstd,
# time and postgresql with apt-get when missing, then runs the benchmark. Data: ../shared/bench/
# {shop,shop_churn}.sql beside the checkout, or RDSBACKUP_BENCH_SHOP_SQL / RDSBACKUP_BENCH_CHURN_SQL.
# Results: bench/results/ (gitignored).
.PHONY: bench bench-archive bench-many-tables
BENCH_PYTHON ?= python
bench:
	PYTHON=$(BENCH_PYTHON) bash bench/install-deps.sh
	$(BENCH_PYTHON) bench/run.py

# Only issue 13's archive figures (archive of the day-2 restore point, restore from the archive): ours alone.
bench-archive:
	RDSBACKUP_BENCH_PARTS=archive $(BENCH_PYTHON) bench/run.py

# Only the full-backup figures (ours next to pg_dump, restic and borg on the shop database; ~5 min idle).
.PHONY: bench-full
bench-full:
	PYTHON=$(BENCH_PYTHON) bash bench/install-deps.sh
	RDSBACKUP_BENCH_PARTS=full $(BENCH_PYTHON) bench/run.py

# Only issue 9's figures: 10,000 small tables, backup next to pg_dump -Fc, restore next to pg_restore -j2.
bench-many-tables:
	RDSBACKUP_BENCH_PARTS=many-tables $(BENCH_PYTHON) bench/run.py

# issue 11's scale figures (bench/scale.py): one session of N = 10, 100, 1,000 databases over 10 accounts x
# 3 regions in moto, through the synthesized state machines with the real handlers; snapshot-only and
# replicated into one vault account-region. Not part of `make test`. RDSBACKUP_BENCH_SCALE_N="10 100" and
# RDSBACKUP_BENCH_SCALE_SCENARIOS="snapshot" (or "replicated") choose.
.PHONY: bench-scale
bench-scale:
	$(BENCH_PYTHON) bench/scale.py

# cfn-lint, cdk-nag (AwsSolutions + HIPAA + NIST 800-53 R5), checkov and parliament over the templates of
# the shipped and the multi-account config; accepted findings, with reasons: security/acknowledged.json.
.PHONY: security
security: bootstrap
	@test -x .venv-security/bin/python || (python3 -m venv .venv-security && \
		.venv-security/bin/pip install --quiet --disable-pip-version-check -r requirements-security.txt)
	python scripts/security_check.py
