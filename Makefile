# Air-gapped bundle builder and installer.
#   make demo   build a bundle from examples/demo, install it into a throwaway root
#   make test   every test (unit, integration, end-to-end)
SHELL := /bin/bash
CARGO ?= cargo
STATIC_DIR := target/static
MUSL := x86_64-unknown-linux-musl

.PHONY: all build static test demo bench e2e vm-e2e fuzz lint clean man completions install-docs ansible-venv ansible-lint

all: build static

build:
	$(CARGO) build --workspace --bins

# A statically linked install-bundle: musl when its Rust target and musl-gcc are
# installed, otherwise glibc with crt-static. Result: target/static/install-bundle
static:
	@mkdir -p $(STATIC_DIR)
	@if rustup target list --installed 2>/dev/null | grep -qx '$(MUSL)' && command -v musl-gcc >/dev/null; then \
		echo "static: musl ($(MUSL))"; \
		CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build -p install-bundle --profile static --target $(MUSL) && \
		cp target/$(MUSL)/static/install-bundle $(STATIC_DIR)/install-bundle; \
	else \
		echo "static: glibc with crt-static (no musl target or musl-gcc)"; \
		RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build -p install-bundle --profile static --target x86_64-unknown-linux-gnu && \
		cp target/x86_64-unknown-linux-gnu/static/install-bundle $(STATIC_DIR)/install-bundle; \
	fi
	@ls -l $(STATIC_DIR)/install-bundle; ldd $(STATIC_DIR)/install-bundle 2>&1 | sed 's/^/ldd: /' || true

test: build static
	$(CARGO) test --workspace --no-fail-fast
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all -- --check
	$(MAKE) ansible-lint

# ansible-core and ansible-lint (pinned in ansible/requirements-test.txt) in target/ansible-venv,
# for the fleet tests (tests/tests/fleet_ansible.rs) and ansible-lint. .ci/run makes it.
ANSIBLE_VENV := target/ansible-venv
ansible-venv: $(ANSIBLE_VENV)/.installed
$(ANSIBLE_VENV)/.installed: ansible/requirements-test.txt
	python3 -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip install -q --disable-pip-version-check -r ansible/requirements-test.txt
	touch $@

# The collection airgap.bundles, linted with ansible-lint (production profile). Also part of `make test`.
# The collection is built and installed first (target/ansible-lint) so that its own roles and modules resolve.
ansible-lint: ansible-venv
	rm -rf target/ansible-lint && mkdir -p target/ansible-lint
	$(ANSIBLE_VENV)/bin/ansible-galaxy collection build --force --output-path target/ansible-lint ansible >/dev/null
	$(ANSIBLE_VENV)/bin/ansible-galaxy collection install --force -p target/ansible-lint/collections target/ansible-lint/airgap-bundles-*.tar.gz >/dev/null
	cd ansible && ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/target/ansible-lint/collections PATH=$(CURDIR)/$(ANSIBLE_VENV)/bin:$$PATH \
		ansible-lint --offline

# The Kubernetes worker node end to end on a real Debian root (root, debootstrap and
# deb.debian.org needed; the root is cached in target/e2e/). Also part of `make test`.
e2e: build static
	$(CARGO) test -p bundle-tests --test worker_e2e -- --nocapture

# Man pages and shell completions, generated from the clap definitions:
#   make man            target/man/*.1 (bundler, install-bundle and one page per subcommand)
#   make completions    target/completions/{bash,zsh,fish}/
#   make install-docs   both into $(PREFIX) (default /usr/local): share/man/man1, bash-completion, zsh, fish
PREFIX ?= /usr/local
man:
	$(CARGO) build -p bundler -p install-bundle --features install-bundle/man
	rm -rf target/man && target/debug/bundler man --out target/man && target/debug/install-bundle man --out target/man
	@ls target/man

completions: build
	@mkdir -p target/completions/bash target/completions/zsh target/completions/fish
	for b in bundler install-bundle; do \
		target/debug/$$b completions bash > target/completions/bash/$$b && \
		target/debug/$$b completions zsh > target/completions/zsh/_$$b && \
		target/debug/$$b completions fish > target/completions/fish/$$b.fish || exit 1; \
	done

install-docs: man completions
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0644 target/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 target/completions/bash/* $(DESTDIR)$(PREFIX)/share/bash-completion/completions/
	install -m 0644 target/completions/zsh/* $(DESTDIR)$(PREFIX)/share/zsh/site-functions/
	install -m 0644 target/completions/fish/* $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/

# The worker node on a booted Debian 12 machine (qemu; KVM when usable, else
# software emulation): install, re-run, reboot, upgrade, power cuts, a failed
# step. Root, qemu-system-x86, debootstrap and deb.debian.org needed; the image
# is cached in target/vm/. Also part of `make test`. VM_ACCEL=tcg forces emulation.
vm-e2e: build static
	$(CARGO) test -p bundle-tests --test vm_worker -- --nocapture

demo: build static
	bash scripts/demo.sh

# Benchmark vs plain tar+zstd (release builds; never part of `make test`).
# Prints the table and writes target/bench.json. BENCH_ARGS: e.g. --size 256M,
# --reps 3, --only build,verify, --scale (0.25-2 GiB; target/bench-scale.json).
# Phases: build,install,verify,download,images,parts,transfer (push/pull against
# moto and docker-registry started on loopback; --transfer-size, default 256M).
bench: static
	$(CARGO) build --release -p bundler -p install-bundle -p bundle-bench
	target/release/bench $(BENCH_ARGS)

# Fuzz the bundle reader and the spec/manifest parsers for FUZZ_SECONDS each
# (needs cargo-fuzz and a nightly toolchain). Seeds: fuzz/corpus/TARGET;
# what the fuzzer adds goes to fuzz/target/corpus/TARGET, crashes to
# fuzz/artifacts/TARGET (turn each into a test in tests/tests/hostile_fuzz_regressions.rs).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= bundle_reader bundle_tar spec_parser
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "fuzz: needs cargo-fuzz (cargo install cargo-fuzz) and a nightly toolchain"; exit 1; }
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$t || exit 1; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(CARGO) +nightly fuzz run --fuzz-dir fuzz $$t fuzz/target/corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 || exit 1; \
	done

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all -- --check

clean:
	$(CARGO) clean
