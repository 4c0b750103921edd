# Fuzzing the running jobs (tests/integration/test_fuzz.py; its short run is part of `make test`).
FUZZ_SECONDS ?= 600
FUZZ_SEED ?=
FUZZ_REPORT := .fuzz/report.json

.PHONY: fuzz
fuzz: install model ## Fuzz the running fraud and sentiment jobs for FUZZ_SECONDS (600; two thirds fraud): hostile records in good traffic, bad profiles; seeds printed (FUZZ_SEED=n replays one), failures saved in .fuzz/ and replayed first; totals in .fuzz/report.json
	@mkdir -p .fuzz && rm -f $(FUZZ_REPORT)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_REPORT=$(FUZZ_REPORT) \
		$(if $(FUZZ_SEED),FUZZ_SEED=$(FUZZ_SEED)) \
		$(PYTEST) tests/integration/test_fuzz.py -p no:cacheprovider -s -q; rc=$$?; \
		$(PY) -m tests.fuzz_util $(FUZZ_REPORT); exit $$rc
