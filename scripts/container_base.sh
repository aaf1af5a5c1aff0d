#!/usr/bin/env bash
# A stand-in for python:3.11-slim, bootstrapped from Debian's own packages, for machines that can
# reach Debian's archive but not a container registry. It carries what the Dockerfile expects of
# its base: python3 with venv, CA certificates, time zone data, netbase and useradd.
# Its tag is a hash of this file, so an unchanged recipe reuses the image already built.
# Prints the image name on stdout; everything else goes to stderr.
set -euo pipefail

SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates,tzdata,netbase
# The merged-usr hook sets up /usr's symlinks itself, as debootstrap does, so the usrmerge package
# and the Perl it needs stay out. As Debian's slim images do: documentation, man pages and translations are left out.
DPKG_EXCLUDES=(
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/locale/*'
    'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/lintian/*'
)

podman=(podman --runtime runc --cgroup-manager=cgroupfs)
tag=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
image="localhost/newsletter-base:$tag"

if "${podman[@]}" image exists "$image"; then
    echo "base image $image: cached" >&2
    echo "$image"
    exit 0
fi

command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is not installed" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "base image $image: bootstrapping Debian $SUITE with mmdebstrap" >&2
dpkgopts=()
for option in "${DPKG_EXCLUDES[@]}"; do dpkgopts+=("--dpkgopt=$option"); done
mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --aptopt='APT::Install-Recommends "false"' "${dpkgopts[@]}" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    "$SUITE" "$work/rootfs.tar" >&2
"${podman[@]}" import --quiet --change 'CMD ["python3"]' "$work/rootfs.tar" "$image" >/dev/null
echo "$image"
