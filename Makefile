# Air-gapped bundle builder and installer.
#   make demo   build a bundle from examples/demo, install it into a throwaway root
#   make test   every test (unit, integration, end-to-end)
SHELL := /bin/bash
CARGO ?= cargo
STATIC_DIR := target/static
MUSL := x86_64-unknown-linux-musl

.PHONY: all build static test demo bench e2e fuzz lint clean

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

demo: build static
	bash scripts/demo.sh

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all -- --check

clean:
	$(CARGO) clean
