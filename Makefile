# commy: build, run, test, fuzz, bench.
GO       ?= go
PREFIX   ?= /usr/local
DESTDIR  ?=
BIN      := bin/commy
PKGS     := ./...
FUZZTIME ?= 20s
SOCKET   ?=

.PHONY: all build run test vet fuzz bench bench-compare generate check-generate clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/commy

# Starts a broker in the foreground with the default socket and data directory
# (see `commy serve --help`); Ctrl-C stops it.
run: build
	./$(BIN) serve $(if $(SOCKET),--socket $(SOCKET))

vet:
	$(GO) vet $(PKGS)
	GOARCH=arm64 $(GO) vet $(PKGS)

test: vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# Each fuzz target runs for FUZZTIME.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME) ./ipc
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./ipc
	$(GO) test -run '^$$' -fuzz '^FuzzDiff$$' -fuzztime $(FUZZTIME) ./simd

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 $(PKGS)

# Runs `commy bench` against a throwaway broker and a throwaway Redis
# (Debian's redis-server, persistence off), each on a Unix socket in a
# temporary directory, then stops both. Prints the Markdown tables of
# docs/benchmarks.md and writes BENCH_PLOT. Needs: apt-get install -y redis-server.
BENCH_FLAGS ?=
BENCH_PLOT  ?= bin/bench.svg
bench-compare: build
	@command -v redis-server >/dev/null || { echo "bench-compare needs redis-server: apt-get install -y redis-server" >&2; exit 1; }
	@set -e; dir=$$(mktemp -d /tmp/commy-bench.XXXXXX); \
	trap 'kill $$bpid $$rpid 2>/dev/null; wait $$bpid $$rpid 2>/dev/null; rm -rf "$$dir"' EXIT INT TERM; \
	./$(BIN) serve --socket $$dir/commy.sock --data-dir $$dir/data >$$dir/commy.log 2>&1 & bpid=$$!; \
	redis-server --port 0 --unixsocket $$dir/redis.sock --save '' --appendonly no --dir $$dir \
		--logfile $$dir/redis.log & rpid=$$!; \
	for i in $$(seq 100); do [ -S $$dir/commy.sock ] && [ -S $$dir/redis.sock ] && break; sleep 0.1; done; \
	./$(BIN) bench --socket $$dir/commy.sock --redis $$dir/redis.sock --plot $(BENCH_PLOT) $(BENCH_FLAGS)

# Regenerates the eBPF objects from ebpf/probe.c (needs Debian's clang, llvm
# and libbpf-dev: apt-get install -y clang llvm libbpf-dev). A plain
# `go test ./ebpf` fails when the committed objects are stale.
generate:
	$(GO) generate ./ebpf/

check-generate: generate
	git diff --exit-code -- ebpf/

clean:
	rm -rf bin

BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
# systemd searches /usr/local/lib/systemd/system and /usr/lib/systemd/system;
# for another PREFIX set UNITDIR=/etc/systemd/system.
UNITDIR ?= $(PREFIX)/lib/systemd/system

.PHONY: man install

# The commy(1) man page, generated from the command line by the hidden
# `commy man` command.
man: build
	./$(BIN) man > bin/commy.1

# Installs the binary, the man page and the systemd units (ExecStart=
# rewritten to $(BINDIR)/commy) under $(DESTDIR). Then, as root:
# systemctl daemon-reload && systemctl enable --now commy.socket
# (see docs/operations.md).
install: build man
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/commy
	install -D -m 0644 bin/commy.1 $(DESTDIR)$(MANDIR)/man1/commy.1
	install -D -m 0644 contrib/systemd/commy.socket $(DESTDIR)$(UNITDIR)/commy.socket
	mkdir -p bin/systemd
	for f in commy.service commy.service.d/ebpf.conf.example commy.service.d/memfd.conf.example; do \
		sed 's|/usr/local/bin/commy|$(BINDIR)/commy|g' contrib/systemd/$$f > bin/systemd/$${f##*/} && \
		install -D -m 0644 bin/systemd/$${f##*/} $(DESTDIR)$(UNITDIR)/$$f || exit 1; \
	done
	@echo "installed:"
	@printf '  %s\n' $(DESTDIR)$(BINDIR)/commy $(DESTDIR)$(MANDIR)/man1/commy.1 \
		$(DESTDIR)$(UNITDIR)/commy.socket $(DESTDIR)$(UNITDIR)/commy.service \
		$(DESTDIR)$(UNITDIR)/commy.service.d/ebpf.conf.example \
		$(DESTDIR)$(UNITDIR)/commy.service.d/memfd.conf.example
