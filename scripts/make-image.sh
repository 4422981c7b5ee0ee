#!/usr/bin/env bash
# Build the dirigent-fn OCI image with umoci from the static binary:
#   scripts/make-image.sh BINARY OUT_LAYOUT
# OUT_LAYOUT becomes an OCI image layout with one image tagged `latest`: entrypoint the
# binary, port 80 exposed, PORT=80. Usable as `oci:OUT_LAYOUT:latest` or pushed to a
# registry with `skopeo copy oci:OUT_LAYOUT:latest docker://HOST:PORT/dirigent-fn:latest`.
set -euo pipefail
bin=${1:?usage: make-image.sh BINARY OUT_LAYOUT}
out=${2:?usage: make-image.sh BINARY OUT_LAYOUT}
if readelf -d "$bin" 2>/dev/null | grep -q NEEDED; then
  echo "make-image: $bin is not statically linked (a sanitizer build?): the image has no libc" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:latest"
umoci unpack --rootless --image "$work/layout:latest" "$work/bundle" >/dev/null
install -m 0755 "$bin" "$work/bundle/rootfs/dirigent-fn"
# /tmp writable by anyone (sticky), as in Docker images: a sandbox in a user namespace does
# not own the image's files
install -d -m 1777 "$work/bundle/rootfs/tmp"
umoci repack --image "$work/layout:latest" "$work/bundle"
umoci config --image "$work/layout:latest" \
  --config.entrypoint /dirigent-fn --config.exposedports 80/tcp --config.env PORT=80 \
  --config.workingdir / --author dirigent
umoci gc --layout "$work/layout"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$work/layout" "$out"
echo "make-image: $out (oci:$out:latest)"
