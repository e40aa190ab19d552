# SPDX-License-Identifier: Apache-2.0
# Sourced by build-docker-image.sh and image-test.sh: sets ENGINE to docker
# or podman (whichever works; ENGINE=... forces one) and, for podman on a
# host like this project's Debian 12 machines (runc installed, no
# CONTAINERS_CONF given), points CONTAINERS_CONF at docker/kumod/containers.conf.
if [ -z "${ENGINE:-}" ]; then
	if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
		ENGINE=docker
	elif command -v podman >/dev/null 2>&1; then
		ENGINE=podman
	else
		echo "no docker engine or podman found (scripts/deps.sh --for image installs podman)" >&2
		exit 1
	fi
fi
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null 2>&1; then
	CONTAINERS_CONF="$(cd "$(dirname "$0")" && pwd)/containers.conf"
	export CONTAINERS_CONF
fi
