#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Builds the kumod container image (docs/container.md) with docker or podman,
# whichever works here. Multi-stage (docker/kumod/Dockerfile): kumod and the
# tools compiled in a Debian bookworm builder, a FROM-scratch runtime with the
# binaries and exactly the libraries they load.
#   IMAGE=NAME          image name (default kumod-toolkit/kumod:latest)
#   BASE_IMAGE=REF      builder base to pull (e.g. debian:bookworm); missing
#                       build packages are installed by scripts/deps.sh in it.
#                       Unset: a base is assembled locally with mmdebstrap from
#                       Debian's archive (DEBIAN_MIRROR, default deb.debian.org)
#   ENGINE=docker|podman  force the engine
#   IMAGE_TOOLS="..."   the tools in the image (default: kcli kumo-console)
set -eu
cd "$(dirname "$0")/../.."
top=$(pwd)
IMAGE=${IMAGE:-kumod-toolkit/kumod:latest}
BASE_TAG=kumod-toolkit/bookworm-build:latest
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org}
work="$top/build/image"

. docker/kumod/engine.sh

mkdir -p "$work"
base="${BASE_IMAGE:-}"
if [ -z "$base" ]; then
	# the packages scripts/deps.sh wants for `run` (so it installs nothing
	# in the builder), plus the CA bundle the runtime image copies
	pkgs=$(sed -n 's/^need run \([^ ]*\) .*/\1/p' scripts/deps.sh | sort -u | tr '\n' ',')ca-certificates
	if [ "$(cat "$work/base.pkgs" 2>/dev/null)" != "$pkgs" ] || ! $ENGINE image inspect "$BASE_TAG" >/dev/null 2>&1; then
		command -v mmdebstrap >/dev/null || { echo "build-docker-image: mmdebstrap missing (scripts/deps.sh --for image)" >&2; exit 1; }
		echo "build-docker-image: assembling $BASE_TAG with mmdebstrap (bookworm)"
		rm -f "$work/base.tar" "$work/base.pkgs"
		mmdebstrap --quiet --variant=apt --include="$pkgs" bookworm "$work/base.tar" \
			"deb $DEBIAN_MIRROR/debian bookworm main" \
			"deb $DEBIAN_MIRROR/debian bookworm-updates main" \
			"deb $DEBIAN_MIRROR/debian-security bookworm-security main"
		$ENGINE import "$work/base.tar" "$BASE_TAG" >/dev/null
		rm -f "$work/base.tar"
		echo "$pkgs" >"$work/base.pkgs"
	fi
	base="$BASE_TAG"
fi

# The build context: the source tree without build outputs (git-tracked and
# untracked-but-not-ignored files when this is a git checkout).
ctx="$work/context"
rm -rf "$ctx"
mkdir -p "$ctx"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --ignore-failed-read 2>/dev/null |
		tar -xf - -C "$ctx"
else
	tar -cf - --exclude=./build --exclude=./node_modules --exclude=./var . | tar -xf - -C "$ctx"
fi

fmt=""
[ "$ENGINE" = podman ] && fmt="--format docker" # keeps HEALTHCHECK (OCI has none)
echo "build-docker-image: $ENGINE build -t $IMAGE (builder base $base)"
# shellcheck disable=SC2086
$ENGINE build $fmt --build-arg BUILDER_BASE="$base" ${IMAGE_TOOLS:+--build-arg "IMAGE_TOOLS=$IMAGE_TOOLS"} -t "$IMAGE" -f "$ctx/docker/kumod/Dockerfile" "$ctx"
$ENGINE image ls "${IMAGE%:*}"
