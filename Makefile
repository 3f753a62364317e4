# commy: build, run, test, fuzz, bench.
GO       ?= go
PREFIX   ?= /usr/local
DESTDIR  ?=
BIN      := bin/commy
PKGS     := ./...
FUZZTIME ?= 20s
SOCKET   ?=

.PHONY: all build release run test vet stress fuzz bench bench-compare generate check-generate clean

all: build

# The version and commit `commy version` prints, stamped at build time.
BASEVERSION := $(shell sed -n 's/^var Version = "\(.*\)"/\1/p' broker/broker.go)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
VERSION     ?= $(BASEVERSION)$(shell git rev-parse --short HEAD >/dev/null 2>&1 && echo "+git.$$(git rev-parse --short HEAD)")
LDFLAGS     := -X github.com/commy/commy/broker.Version=$(VERSION) -X github.com/commy/commy/internal/cli.commit=$(COMMIT)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/commy

# The binary that install and deb ship: no local paths (-trimpath), no
# symbol table or DWARF (-s -w), the version stamped.
RELEASE := bin/release/commy
release:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(RELEASE) ./cmd/commy

# Starts a broker in the foreground with the default socket and data directory
# (see `commy serve --help`); Ctrl-C stops it.
run: build
	./$(BIN) serve $(if $(SOCKET),--socket $(SOCKET))

vet:
	$(GO) vet $(PKGS)
	GOARCH=arm64 $(GO) vet $(PKGS)

test: vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	# Memory per idle connection, measured without the race detector's overhead.
	$(GO) test -count=1 -run '^TestIdleConnectionMemory$$' ./broker

# The multi-process stress test (client's TestStress: a writer, a reader
# process on its mapping, the broker killed with SIGKILL every 1.5 s) for
# STRESS_TIME; `make test` runs it for 3 s.
STRESS_TIME ?= 2m
stress:
	COMMY_STRESS=$(STRESS_TIME) $(GO) test -race -count=1 -timeout 0 -run '^TestStress$$' -v ./client

# Each fuzz target runs for FUZZTIME.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME) ./internal/ipc
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/ipc
	$(GO) test -run '^$$' -fuzz '^FuzzFastDecode$$' -fuzztime $(FUZZTIME) ./internal/ipc
	$(GO) test -run '^$$' -fuzz '^FuzzDiff$$' -fuzztime $(FUZZTIME) ./internal/simd

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

# Regenerates the eBPF objects from internal/ebpf/probe.c (needs Debian's clang, llvm
# and libbpf-dev: apt-get install -y clang llvm libbpf-dev). A plain
# `go test ./internal/ebpf` fails when the committed objects are stale.
generate:
	$(GO) generate ./internal/ebpf/

check-generate: generate
	git diff --exit-code -- internal/ebpf/

clean:
	rm -rf bin

BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
# systemd searches /usr/local/lib/systemd/system and /usr/lib/systemd/system;
# for another PREFIX set UNITDIR=/etc/systemd/system.
UNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

.PHONY: man completions install deb deb-test

# The commy(1) man page, generated from the command line by the hidden
# `commy man` command.
man: build
	./$(BIN) man > bin/commy.1

completions: build
	./$(BIN) completion bash > bin/commy.bash
	./$(BIN) completion zsh > bin/_commy
	./$(BIN) completion fish > bin/commy.fish

# Installs the release binary, the man page, the shell completions and the
# systemd units (ExecStart= rewritten to $(BINDIR)/commy) under $(DESTDIR).
# Then, as root: systemctl daemon-reload && systemctl enable --now commy.socket
# (see docs/operations.md).
install: release man completions
	install -D -m 0755 $(RELEASE) $(DESTDIR)$(BINDIR)/commy
	install -D -m 0644 bin/commy.1 $(DESTDIR)$(MANDIR)/man1/commy.1
	install -D -m 0644 bin/commy.bash $(DESTDIR)$(BASHCOMPDIR)/commy
	install -D -m 0644 bin/_commy $(DESTDIR)$(ZSHCOMPDIR)/_commy
	install -D -m 0644 bin/commy.fish $(DESTDIR)$(FISHCOMPDIR)/commy.fish
	install -D -m 0644 contrib/systemd/commy.socket $(DESTDIR)$(UNITDIR)/commy.socket
	mkdir -p bin/systemd
	for f in commy.service commy.service.d/ebpf.conf.example commy.service.d/memfd.conf.example; do \
		sed 's|/usr/local/bin/commy|$(BINDIR)/commy|g' contrib/systemd/$$f > bin/systemd/$${f##*/} && \
		install -D -m 0644 bin/systemd/$${f##*/} $(DESTDIR)$(UNITDIR)/$$f || exit 1; \
	done
	@echo "installed:"
	@printf '  %s\n' $(DESTDIR)$(BINDIR)/commy $(DESTDIR)$(MANDIR)/man1/commy.1 \
		$(DESTDIR)$(BASHCOMPDIR)/commy $(DESTDIR)$(ZSHCOMPDIR)/_commy $(DESTDIR)$(FISHCOMPDIR)/commy.fish \
		$(DESTDIR)$(UNITDIR)/commy.socket $(DESTDIR)$(UNITDIR)/commy.service \
		$(DESTDIR)$(UNITDIR)/commy.service.d/ebpf.conf.example \
		$(DESTDIR)$(UNITDIR)/commy.service.d/memfd.conf.example

# The Debian package bin/commy_VERSION_ARCH.deb, built by nfpm
# (contrib/debian/nfpm.yaml). `go run` fetches the pinned nfpm through the
# module proxy; it never enters go.mod or the commy binary.
NFPM     ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DEBARCH  ?= $(shell $(GO) env GOARCH)
deb: release man completions
	rm -rf bin/pkg && mkdir -p bin/pkg/systemd
	cp $(RELEASE) bin/commy.bash bin/_commy bin/commy.fish bin/pkg/
	gzip -9n < bin/commy.1 > bin/pkg/commy.1.gz
	for f in commy.service commy.service.d/ebpf.conf.example commy.service.d/memfd.conf.example; do \
		sed 's|/usr/local/bin/commy|/usr/bin/commy|g' contrib/systemd/$$f > bin/pkg/systemd/$${f##*/} || exit 1; \
	done
	VERSION='$(VERSION)' ARCH='$(DEBARCH)' GOFLAGS= $(NFPM) package --config contrib/debian/nfpm.yaml --packager deb --target bin/
	@ls bin/*.deb

# Builds the package, installs it in a clean Debian chroot made for the run
# (mmdebstrap, else debootstrap, from Debian's mirror), starts `commy serve`
# there and talks to it, then purges it. Root only; about two minutes with
# mmdebstrap. Needs: apt-get install -y mmdebstrap.
deb-test: deb
	contrib/debian/test-install.sh bin/commy_$(VERSION)_$(DEBARCH).deb
