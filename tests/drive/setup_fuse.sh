#!/usr/bin/env bash
# FUSE for the Drive-like mount of the durability lane (`make test-drive`, tests/test_drive.py).
#
# Needs /dev/fuse (the kernel's FUSE device) and libfuse 3 with fusermount3 (Debian's fuse3); the
# Python side (mfusepy, a ctypes binding) comes from requirements-dev.txt. As root, installs fuse3
# when it is missing. Idempotent.
# Exit status: 0 ready; 1 FUSE cannot be had here (the line says why and what to do).
set -euo pipefail

fail() {
	echo "drive-like mount unavailable: $*" >&2
	exit 1
}

[ -e /dev/fuse ] || fail "/dev/fuse is missing (a container needs --device /dev/fuse --cap-add SYS_ADMIN)"
if ! command -v fusermount3 >/dev/null || ! ldconfig -p | grep -q libfuse3.so.3; then
	[ "$(id -u)" -eq 0 ] || fail "fuse3 is not installed and this is not root; fix: sudo apt-get install fuse3"
	command -v apt-get >/dev/null || fail "fuse3 is not installed and there is no apt-get; install libfuse 3 and fusermount3"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null ||
		fail "apt-get install fuse3 failed"
fi
echo "drive-like mount: FUSE ready ($(fusermount3 --version 2>&1 | head -1))"
