#!/bin/sh
# Builds the image shoal-test/busybox:latest for the Docker executor's tests, without any
# registry: a root file system holding Debian's static busybox (/bin/busybox, package
# busybox-static) and one symlink per applet, imported with `docker import`.
#
# Usage: scripts/build-test-image.sh [--force]
#   Skips the build when the image exists already, unless --force is given.
#   Environment: SHOAL_TEST_IMAGE (default shoal-test/busybox:latest), BUSYBOX (default
#   /bin/busybox), DOCKER (default docker).
set -eu

IMAGE=${SHOAL_TEST_IMAGE:-shoal-test/busybox:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}
DOCKER=${DOCKER:-docker}
FORCE=0

for arg in "$@"; do
	case "$arg" in
	--force) FORCE=1 ;;
	-h | --help)
		sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "build-test-image: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

if ! command -v "$DOCKER" >/dev/null 2>&1; then
	echo "build-test-image: no docker command found" >&2
	exit 1
fi

if [ "$FORCE" = 0 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
	echo "build-test-image: $IMAGE exists already; nothing to do (use --force to rebuild)"
	exit 0
fi

if [ ! -x "$BUSYBOX" ]; then
	echo "build-test-image: $BUSYBOX is missing; install it with: apt-get install busybox-static" >&2
	exit 1
fi
# The image has no libraries: the binary must be static.
if ! "$BUSYBOX" --list >/dev/null 2>&1; then
	echo "build-test-image: $BUSYBOX does not run or has no --list" >&2
	exit 1
fi
if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked\|static-pie'; then
	echo "build-test-image: $BUSYBOX is not statically linked; install busybox-static" >&2
	exit 1
fi

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/shoal-test-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT INT TERM

mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/tmp" "$ROOTFS/proc" "$ROOTFS/sys" \
	"$ROOTFS/dev" "$ROOTFS/root"
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
chmod 0755 "$ROOTFS/bin/busybox"
applets=0
for applet in $("$BUSYBOX" --list); do
	if [ "$applet" != busybox ] && [ ! -e "$ROOTFS/bin/$applet" ]; then
		ln -s busybox "$ROOTFS/bin/$applet"
		applets=$((applets + 1))
	fi
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"

id=$(tar -C "$ROOTFS" -c . | "$DOCKER" import \
	--change 'ENV PATH=/bin' \
	--change 'CMD ["/bin/sh"]' \
	- "$IMAGE")
echo "build-test-image: built $IMAGE ($id) from $BUSYBOX with $applets applet links"
