#!/bin/sh
# Builds a Docker image of Shoal itself, without any registry: a root file system holding the
# `shoal` and `shoal-process-shim` binaries, the shared libraries they load (found with ldd),
# and Debian's static busybox for a shell and the usual tools, imported with `docker import`.
# Used to run Shoal clusters as containers on a private Docker network (each node its own host
# with its own address).
#
# Usage: scripts/build-shoal-image.sh [--force] [BINARY_DIR]
#   BINARY_DIR holds shoal and shoal-process-shim (default: $CARGO_TARGET_DIR/release, else
#   target/release). Rebuilds when the image is older than the binary, or with --force.
#   Environment: SHOAL_IMAGE (default shoal:local), BUSYBOX (default /bin/busybox),
#   DOCKER (default docker).
set -eu

IMAGE=${SHOAL_IMAGE:-shoal:local}
BUSYBOX=${BUSYBOX:-/bin/busybox}
DOCKER=${DOCKER:-docker}
FORCE=0
DIR=""

for arg in "$@"; do
	case "$arg" in
	--force) FORCE=1 ;;
	-h | --help)
		sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	-*)
		echo "build-shoal-image: unknown argument: $arg" >&2
		exit 2
		;;
	*) DIR=$arg ;;
	esac
done
if [ -z "$DIR" ]; then
	DIR=${CARGO_TARGET_DIR:-target}/release
fi
SHOAL="$DIR/shoal"
SHIM="$DIR/shoal-process-shim"

for tool in "$DOCKER" ldd tar; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "build-shoal-image: $tool is missing" >&2
		exit 1
	fi
done
for bin in "$SHOAL" "$SHIM"; do
	if [ ! -x "$bin" ]; then
		echo "build-shoal-image: $bin is missing; build it with: cargo build --release -p shoal" >&2
		exit 1
	fi
done
if [ ! -x "$BUSYBOX" ]; then
	echo "build-shoal-image: $BUSYBOX is missing; install it with: apt-get install busybox-static" >&2
	exit 1
fi

# The image's creation time against the binary's modification time, both in seconds.
if [ "$FORCE" = 0 ] && created=$("$DOCKER" image inspect --format '{{.Metadata.LastTagTime.Unix}}' "$IMAGE" 2>/dev/null); then
	built=$(stat -c %Y "$SHOAL")
	if [ "${created:-0}" -ge "$built" ] 2>/dev/null; then
		echo "build-shoal-image: $IMAGE is newer than $SHOAL; nothing to do (use --force to rebuild)"
		exit 0
	fi
fi

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/shoal-image-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT INT TERM

mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/tmp" "$ROOTFS/proc" "$ROOTFS/sys" \
	"$ROOTFS/dev" "$ROOTFS/root" "$ROOTFS/var/lib/shoal" "$ROOTFS/run"
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $("$BUSYBOX" --list); do
	[ "$applet" = busybox ] || [ -e "$ROOTFS/bin/$applet" ] || ln -s busybox "$ROOTFS/bin/$applet"
done
cp "$SHOAL" "$ROOTFS/bin/shoal"
cp "$SHIM" "$ROOTFS/bin/shoal-process-shim"
chmod 0755 "$ROOTFS/bin/shoal" "$ROOTFS/bin/shoal-process-shim"

# Shared libraries, at the paths the binaries look for them (the loader included).
libraries=0
for lib in $(ldd "$SHOAL" "$SHIM" | awk '/=> \// {print $3} /^[[:space:]]+\// {print $1}' | sort -u); do
	mkdir -p "$ROOTFS$(dirname "$lib")"
	cp -L "$lib" "$ROOTFS$lib"
	libraries=$((libraries + 1))
done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"

id=$(tar -C "$ROOTFS" -c . | "$DOCKER" import \
	--change 'ENV PATH=/bin' \
	--change 'ENTRYPOINT ["/bin/shoal"]' \
	--change 'CMD ["daemon", "--state-dir", "/var/lib/shoal"]' \
	- "$IMAGE")
echo "build-shoal-image: built $IMAGE ($id) from $SHOAL with $libraries shared libraries"
