# cartreg: `make help` lists what this file can do.
#
# `make run` and `make test` do all set-up on a fresh Debian machine: they install the
# PostgreSQL server packages if none are found (the project never depends on a running
# system PostgreSQL: it starts private clusters of its own).

GO      ?= go
BIN     := bin/cartreg
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.DEFAULT_GOAL := help
.PHONY: help build run test acceptance lint bench bench-go soak fuzz migrate postgres chromium fixtures

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/cartreg
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cartreg

run: postgres build ## run the server on http://localhost:8080 with the embedded database in the per-user data dir
	./$(BIN) serve

test: postgres chromium ## run every test, with the race detector, against real PostgreSQL (large data sets trimmed)
	$(GO) test -race -short -count=1 -timeout 15m ./...

acceptance: postgres ## the full-size data tests: all 81 Synthea Bundles through the API, and exported and imported again (a few minutes)
	$(GO) test -count=1 -timeout 30m -run 'TestSyntheaBundlesLoadThroughTheAPI|TestSyntheaExportRoundTripsThroughTheImportCommand' ./fhir/ ./cmd/cartreg/

lint: ## go vet, staticcheck, and fail on files gofmt would change
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi

# BENCH_FLAGS passes flags to the harness, e.g. BENCH_FLAGS='-patients 10000 -profile /tmp/prof'.
bench: postgres build ## the benchmark harness: a synthetic cohort through a running server; writes bench/results.json and README's table (about 20 minutes)
	$(GO) run ./bench -bin $(BIN) -out bench/results.json -readme README.md $(BENCH_FLAGS)

bench-go: postgres ## the Go benchmarks of single operations (go test -bench)
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./...

# SOAK_TIME is how long the attacks are sent; SOAK_FLAGS passes more, e.g. SOAK_FLAGS='-attack-out /tmp/soak.json'.
SOAK_TIME ?= 60s
soak: postgres build ## every attack of issue 15 at once against a real server for SOAK_TIME (60s); fails on a 5xx or RSS >= 500 MB
	$(GO) run ./bench -attack $(SOAK_TIME) -bin $(BIN) $(SOAK_FLAGS)

# FUZZTIME is how long each fuzz target runs. `make test` runs their seed corpora only.
FUZZTIME ?= 60s
FUZZ_TARGETS := ./fhir:FuzzBundle ./fhir:FuzzSearchQuery
fuzz: ## run each fuzz target with -fuzz for FUZZTIME (60s); new failing inputs land in testdata/fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzzing $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s -parallel 2 "$${t%%:*}"; \
	done

migrate: postgres build ## apply pending migrations to the configured database
	./$(BIN) migrate up -init

postgres: ## make sure PostgreSQL server binaries (and, as root, a user to run them) exist
	@if [ -n "$$CARTREG_PG_BIN_DIR" ] && [ -x "$$CARTREG_PG_BIN_DIR/initdb" ]; then :; \
	elif command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "PostgreSQL server binaries not found: installing Debian's postgresql package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "PostgreSQL server binaries (initdb, postgres) not found."; \
		echo "Install them (Debian/Ubuntu: sudo apt-get install -y postgresql; macOS: brew install postgresql)"; \
		echo "or point CARTREG_PG_BIN_DIR at their directory."; \
		exit 1; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! id "$${CARTREG_PG_USER:-postgres}" >/dev/null 2>&1; then \
		echo "creating system user $${CARTREG_PG_USER:-postgres} to run PostgreSQL (it refuses to run as root)"; \
		useradd --system --no-create-home --shell /usr/sbin/nologin "$${CARTREG_PG_USER:-postgres}"; \
	fi

chromium: ## make sure a headless Chromium exists for the browser tests (as root, installs Debian's chromium package)
	@if [ -n "$$CARTREG_CHROMIUM" ] && [ -x "$$CARTREG_CHROMIUM" ]; then :; \
	elif command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Chromium not found: installing Debian's chromium package for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "Chromium not found: the browser tests will be skipped (they fail under CI=true)."; \
		echo "Install it (Debian/Ubuntu: sudo apt-get install -y chromium) or point CARTREG_CHROMIUM at it."; \
	fi

fixtures: ## regenerate the statistics reference fixtures with R's survival and cmprsk packages (installs R from Debian)
	@Rscript -e 'library(survival); library(cmprsk)' >/dev/null 2>&1 || { \
		echo "R with the survival and cmprsk packages not found: installing Debian's r-base-core, r-cran-survival and r-cran-cmprsk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-base-core r-cran-survival r-cran-cmprsk >/dev/null; }
	$(GO) run ./registry/stats/testdata/gencohorts -dir registry/stats/testdata
	Rscript registry/stats/testdata/reference.R
	-$(GO) test ./registry -run TestAnalysisFileAgreesWithR -count=1 -update-analysis >/dev/null  # refreshes cohort.csv; fails until R has run
	Rscript registry/testdata/analysis/analyse.R
	$(GO) test ./registry -run TestAnalysisFileAgreesWithR -count=1
