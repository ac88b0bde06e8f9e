#!/bin/bash
# Build fedcollab's container images with Podman, no image registry involved:
#   localhost/fedcollab-debian:bookworm   Debian bookworm (minbase + python3) from debootstrap,
#                                         built once and kept in Podman's storage
#   localhost/fedcollab-coordinator       deploy/Containerfile.coordinator
#   localhost/fedcollab-node              deploy/Containerfile.node
# Needs root (debootstrap, rootful Podman). `make containers` installs podman, runc,
# podman-compose and debootstrap first. The build context is the clone's files that git
# knows of (tracked and untracked, .gitignore respected: no .venv, no results).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/containers.conf}"
BASE=localhost/fedcollab-debian:bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! podman image exists "$BASE"; then
  tmp=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$tmp/rootfs" "$MIRROR"
  tar -C "$tmp/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE"
  rm -rf "$tmp"
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -c | tar -C "$ctx" -x

# pip's configuration and trust store on this host, for the build steps only (mounted, not
# copied into the images): its site and user config files (the build runs as root), the
# local folders they name, and the host's CA bundle (a TLS-intercepting proxy's CA included).
volumes=""
ro_mount() { if [ -e "$1" ]; then volumes="$volumes --volume $1:$2:ro"; fi; }
ro_mount /etc/pip.conf /etc/pip.conf
ro_mount /etc/xdg/pip /etc/xdg/pip
ro_mount "$HOME/.config/pip/pip.conf" /root/.config/pip/pip.conf
for dir in /opt/wheels /opt/pypi /opt/pypi-more; do ro_mount "$dir" "$dir"; done
ro_mount /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
for role in coordinator node; do
  # shellcheck disable=SC2086  # $volumes is a list of flags
  podman build --network host $volumes -f "$PWD/deploy/Containerfile.$role" \
    -t "localhost/fedcollab-$role:latest" "$ctx"
done
