#!/usr/bin/env bash
# make demo: build a bundle from examples/demo/spec.json with its artifacts served
# by a local HTTP server, verify it, install it with the static installer into a
# throwaway root, install again (0 changed), and show the receipt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLER=target/debug/bundler
INSTALLER=target/static/install-bundle
SERVE=target/debug/serve
[ -x "$INSTALLER" ] || INSTALLER=target/debug/install-bundle
work=$(mktemp -d "${TMPDIR:-/tmp}/bundle-demo.XXXXXX")
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "serving examples/demo/files on 127.0.0.1 (stands in for upstream download sites)"
"$SERVE" examples/demo/files --port-file "$work/url" --timeout 300 & server=$!
for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
base=$(cat "$work/url")
# The spec pins every artifact; only the address of the local server changes.
sed "s#http://127.0.0.1:8765#$base#g" examples/demo/spec.json > "$work/spec.json"
echo "artifacts at $base/"

say "bundler keygen (a throwaway key: the repository ships none)"
"$BUNDLER" keygen --out "$work/keys/demo" --unencrypted

say "bundler build"
SOURCE_DATE_EPOCH=1767225600 "$BUNDLER" build "$work/spec.json" --key "$work/keys/demo.key" \
  --cache "$work/cache" -o "$work/demo-node.tar.zst"

say "bundler verify (signature, manifest, every byte)"
"$BUNDLER" verify "$work/demo-node.tar.zst" --key "$work/keys/demo.pub" --quiet

say "bundler inspect"
"$BUNDLER" inspect "$work/demo-node.tar.zst" --key "$work/keys/demo.pub"

say "a throwaway root: an empty dpkg database and an fstab with a swap line"
root="$work/root"
mkdir -p "$root/etc" "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
printf 'UUID=0000 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n' > "$root/etc/fstab"
echo "$root"

say "install-bundle $(basename "$INSTALLER") --root ROOT --set NODE_NAME=demo-1 ($(file -b "$INSTALLER" | cut -d, -f1-2,4 ))"
"$INSTALLER" "$work/demo-node.tar.zst" --root "$root" --trusted-key "$work/keys/demo.pub" --set NODE_NAME=demo-1

say "install again: nothing to do"
"$INSTALLER" "$work/demo-node.tar.zst" --root "$root" --trusted-key "$work/keys/demo.pub" --set NODE_NAME=demo-1 | tail -n 1

say "a modified bundle is refused (exit 3) and the root is unchanged"
cp "$work/demo-node.tar.zst" "$work/tampered.tar.zst"
printf '\xff' | dd of="$work/tampered.tar.zst" bs=1 seek=600 conv=notrunc status=none
set +e
"$INSTALLER" "$work/tampered.tar.zst" --root "$root" --trusted-key "$work/keys/demo.pub" --set NODE_NAME=demo-1
echo "exit code $?"
set -e

say "install-bundle status demo-node"
"$INSTALLER" status demo-node --root "$root"

say "what the root holds now"
(cd "$root" && find . -path ./var/lib/dpkg -prune -o \( -type f -o -type l \) -print | sort)
echo; cat "$root/etc/demo/node.conf"; echo; cat "$root/etc/fstab"
