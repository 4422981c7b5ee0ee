#!/bin/sh
# meson install script (configs/meson.build): copy each example config from EXAMPLES to
# CONFDIR unless a file of that name is there already, so reinstalling never overwrites what
# the operator edited. Both paths are the installed ones; DESTDIR (meson sets it from
# --destdir) is prepended. Honours meson's dry run.
# Usage: install-configs.sh EXAMPLES CONFDIR
set -eu
src="${DESTDIR:-}$1"
dst="${DESTDIR:-}$2"
for f in "$src"/*.yaml; do
  name=$(basename "$f")
  if [ -e "$dst/$name" ]; then
    echo "Keeping existing $dst/$name (the new example is $f)"
  elif [ -n "${MESON_INSTALL_DRY_RUN:-}" ]; then
    echo "Would install $f to $dst/$name"
  else
    mkdir -p "$dst"
    cp "$f" "$dst/$name"
    chmod 0644 "$dst/$name"
    echo "Installing $dst/$name"
  fi
done
