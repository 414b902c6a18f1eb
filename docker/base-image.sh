#!/usr/bin/env bash
# Make a Debian bookworm base image without a registry: debootstrap a minimal root file system from a Debian mirror
# and `docker import` it. Stands in for Docker Hub's debian:bookworm-slim where Docker Hub cannot be reached.
#   usage: bash docker/base-image.sh [TAG]        (default visual-words/debian:bookworm-slim; root; needs debootstrap)
#   env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), DOCKER (the client)
set -euo pipefail
tag=${1:-visual-words/debian:bookworm-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
[ "$(id -u)" = 0 ] || { echo "base-image.sh: debootstrap needs root" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/vw-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "[base] debootstrap --variant=minbase bookworm from $mirror" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

# As the official slim image: point-release and security updates on, no docs or man pages, no apt caches.
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/usr/share/man/* "$rootfs"/tmp/* "$rootfs"/var/log/*.log

echo "[base] docker import -> $tag" >&2
tar --numeric-owner -C "$rootfs" -c . | "$docker" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase bookworm $mirror ($(date -u +%Y-%m-%d))" - "$tag" >/dev/null
"$docker" image ls "$tag" >&2
