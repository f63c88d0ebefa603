#!/usr/bin/env bash
# Run the release binary in a root filesystem that holds nothing but the binary: no libc, no
# loader, no /etc. If it was linked dynamically this fails with "No such file or directory".
set -euo pipefail
bin=${1:?usage: e2e/static-check.sh PATH-TO-pgwarden}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cp "$bin" "$root/pgwarden"
if file "$bin" | grep -q 'dynamically linked'; then
    echo "static-check: $bin is dynamically linked" >&2
    exit 1
fi
out=$(chroot "$root" /pgwarden crd)
grep -q 'kind: CustomResourceDefinition' <<<"$out" || {
    echo "static-check: 'pgwarden crd' in an empty rootfs did not print the CRD" >&2
    exit 1
}
echo "    $(file -b "$bin" | cut -d, -f1-4)"
echo "    runs in an empty rootfs: ok"
