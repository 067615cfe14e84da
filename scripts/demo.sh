#!/usr/bin/env bash
# make demo: build a bundle from examples/demo/spec.json with its artifacts served
# by a local HTTP server, verify it, install it with the static installer into a
# throwaway root, install again (0 changed), and show the receipt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLER=target/debug/bundler
INSTALLER=target/static/install-bundle
SERVE=target/debug/serve
REGISTRY=target/debug/demo-registry
[ -x "$INSTALLER" ] || INSTALLER=target/debug/install-bundle
work=$(mktemp -d "${TMPDIR:-/tmp}/bundle-demo.XXXXXX")
server=""
registry=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  # Closing its input stops the registry (and its docker-registry).
  [ -n "$registry" ] && { exec 4>&-; wait "$registry" 2>/dev/null; }
  rm -rf "$work"
}
trap cleanup EXIT
# Bold headings on a terminal, unless NO_COLOR is set (https://no-color.org).
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  say() { printf '\n== %s\n' "$*"; }
fi

say "serving examples/demo/files on 127.0.0.1 (stands in for upstream download sites)"
"$SERVE" examples/demo/files --port-file "$work/url" --timeout 300 & server=$!
for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
base=$(cat "$work/url")
# The spec pins every artifact; only the address of the local server changes.
sed "s#http://127.0.0.1:8765#$base#g" examples/demo/spec.json > "$work/spec.json"
echo "artifacts at $base/"

# A container image, when this machine has what it takes: a registry to pull
# it from (Debian's docker-registry) and a containerd to import it into.
with_image=""
if command -v docker-registry >/dev/null && command -v containerd >/dev/null \
   && command -v ctr >/dev/null && [ -x /bin/busybox ]; then
  say "serving a container image from a loopback registry (stands in for registry.k8s.io)"
  mkfifo "$work/registry-stop"
  "$REGISTRY" "$work/image.json" < "$work/registry-stop" & registry=$!
  exec 4>"$work/registry-stop"
  for _ in $(seq 300); do [ -s "$work/image.json" ] && break; sleep 0.1; done
  cat "$work/image.json"; echo
  python3 - "$work/spec.json" "$work/image.json" <<'PY'
import json, sys
spec, image = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
spec["images"] = {"hello": image}
spec["steps"].append({"kind": "images", "images": ["hello"], "namespace": "k8s.io", "pin": True})
json.dump(spec, open(sys.argv[1], "w"), indent=2)
PY
  with_image=1
else
  say "no container image in this demo: it needs docker-registry, containerd, ctr and busybox-static (apt-get install docker-registry containerd busybox-static)"
fi

say "bundler keygen (a throwaway key: the repository ships none)"
"$BUNDLER" keygen --out "$work/keys/demo" --unencrypted

say "bundler build"
SOURCE_DATE_EPOCH=1767225600 "$BUNDLER" build "$work/spec.json" --key "$work/keys/demo.key" \
  --cache "$work/cache" -o "$work/demo-node.tar.zst"

say "bundler verify (signature, manifest, every byte)"
"$BUNDLER" verify "$work/demo-node.tar.zst" --key "$work/keys/demo.pub"

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

if [ -n "$with_image" ]; then
  say "the root's own containerd, started on it, has the image pinned and runs it offline"
  ctd="$work/containerd"; mkdir -p "$ctd"
  printf 'version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]\n[grpc]\n  address = "%s"\n' \
    "$root/var/lib/containerd" "$ctd/state" "$ctd/sock" > "$ctd/config.toml"
  containerd --config "$ctd/config.toml" > "$ctd/log" 2>&1 & ctdpid=$!
  for _ in $(seq 100); do ctr -a "$ctd/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr -a "$ctd/sock" -n k8s.io images ls
  ref=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ref"])' "$work/image.json")
  ctr -a "$ctd/sock" -n k8s.io run --rm "$ref" demo-hello || echo "(ctr run needs a kernel that allows containers here)"
  kill "$ctdpid"; wait "$ctdpid" 2>/dev/null || true
fi

say "what the root holds now"
(cd "$root" && find . \( -path ./var/lib/dpkg -o -path ./var/lib/containerd \) -prune -o \( -type f -o -type l \) -print | sort)
echo; cat "$root/etc/demo/node.conf"; echo; cat "$root/etc/fstab"
