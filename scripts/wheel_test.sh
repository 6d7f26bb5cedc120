#!/usr/bin/env bash
# Proves the wheel self-contained: builds it (scripts/wheel.sh, into a temporary directory; or takes
# the wheel given as $1), then installs it with pip into a fresh virtual environment inside a
# minimal Debian root made with debootstrap (the host's suite, --variant=minbase, plus python3 and
# python3-venv only: no Swift toolchain, no OpenBLAS, no compiler), and runs scripts/wheel_smoke.py
# there under `chroot` with an empty environment: the vendored OpenBLAS is the one loaded, the
# OpenBLAS kernel choice (metaweight's and a user's OPENBLAS_CORETYPE), training with ERM and
# MW-Net, and a checkpoint round trip.
#
# The Debian root is cached in $METAWEIGHT_DEBOOTSTRAP_CACHE (default
# /var/cache/metaweight-debootstrap, outside the repository); each run works in an overlay on it
# (a copy where overlayfs is unavailable), so the cache stays pristine. numpy (the wheel's one
# dependency) is downloaded on the host with pip into a wheelhouse next to it, for the root's Python
# and glibc, and installed inside with --no-index --find-links: nothing inside the root touches the
# network, and the host's pip configuration (index, proxy, certificates) applies to the download.
#
# Exit status: 0 when the checks pass, or, with a line starting "SKIPPED", when this machine cannot
# run debootstrap and chroot at all (not root, chroot or mounting /proc refused, as in an
# unprivileged container); non-zero on any failure, including a failing debootstrap.
# Time here (2 shared cores): warm 26 s on an idle machine, 51-63 s at load 10 (the wheel build
# ~25 s of it); cold, with debootstrap's download and install, 3.5 min (debootstrap 43-156 s).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
elapsed() { echo "[$((SECONDS - start)) s]"; }

skip() {
  echo "wheel_test.sh: SKIPPED, the wheel was not tested in an isolated Debian root: $*"
  exit 0
}

# -- can this machine run debootstrap and chroot? -----------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root for debootstrap, mount and chroot (running as uid $(id -u))"
# Probes, not capability bits: a container may grant the bits yet refuse the operations.
chroot / /bin/true 2>/dev/null || skip "chroot is not permitted here (no CAP_SYS_CHROOT?)"
probe=$(mktemp -d)
if ! mount -t proc proc "$probe" 2>/dev/null; then
  rmdir "$probe"
  skip "mounting /proc is not permitted here (no CAP_SYS_ADMIN?), and debootstrap and the root need it"
fi
umount "$probe" && rmdir "$probe"
if ! command -v debootstrap >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || skip "debootstrap is not installed and there is no apt-get to install it"
  echo "== installing debootstrap (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
fi

# shellcheck disable=SC1091
suite=${METAWEIGHT_DEBOOTSTRAP_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
[ -n "$suite" ] || suite=bookworm
mirror=${METAWEIGHT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${METAWEIGHT_DEBOOTSTRAP_CACHE:-/var/cache/metaweight-debootstrap}
include=python3,python3-venv
mkdir -p "$cache"

run=$(mktemp -d "$cache/run.XXXXXX")
root=$run/root
cleanup() {
  local rc=$? m
  for m in "$root/proc" "$root"; do
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" || umount -l "$m"; fi
  done
  if mountpoint -q "$root/proc" 2>/dev/null || mountpoint -q "$root" 2>/dev/null; then
    echo "wheel_test.sh: $root is still mounted; $run left in place" >&2
  else
    rm -rf --one-file-system "$run"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- the wheel ------------------------------------------------------------------------------------------
if [ $# -ge 1 ]; then
  wheel=$(realpath "$1")
else
  METAWEIGHT_WHEEL_DIR="$run/dist" bash scripts/wheel.sh
  wheel=$(ls "$run"/dist/metaweight-*.whl)
fi
echo "== wheel: $(basename "$wheel") $(elapsed)"

# -- the Debian root (cached) ---------------------------------------------------------------------------
base=$cache/$suite-minbase
stamp="suite=$suite variant=minbase include=$include mirror=$mirror"
(
  flock 9
  if [ ! -f "$base/.metaweight-root" ] || [ "$(cat "$base/.metaweight-root")" != "$stamp" ]; then
    echo "== debootstrap --variant=minbase --include=$include $suite ($mirror), cached in $base"
    t0=$SECONDS
    rm -rf --one-file-system "$base.new"
    if ! debootstrap --variant=minbase --include="$include" "$suite" "$base.new" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      tail -n 30 "$cache/debootstrap.log" >&2
      echo "wheel_test.sh: debootstrap failed (log: $cache/debootstrap.log)" >&2
      exit 1
    fi
    rm -f "$base.new"/var/cache/apt/archives/*.deb
    echo "$stamp" >"$base.new/.metaweight-root"
    rm -rf --one-file-system "$base"
    mv "$base.new" "$base"
    echo "debootstrap: $((SECONDS - t0)) s, $(du -sh "$base" | cut -f1)"
  fi
) 9>"$cache/lock"
# Held shared while this run uses the cached root (a rebuild takes it exclusively).
exec 8<"$cache/lock"
flock -s 8
# This run's root: an overlay on the cached one (writes land in $run/upper), or a copy where
# overlayfs is not available.
mkdir -p "$root" "$run/upper" "$run/work"
if ! mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$root" 2>/dev/null; then
  rmdir "$root"
  cp -a "$base" "$root"
fi

in_root() {
  chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

# No Swift and no BLAS in the root before the wheel arrives.
found=$(find "$root" -xdev \( -name 'swift*' -o -name 'libswift*' -o -name 'libFoundation*' \
  -o -name 'libopenblas*' -o -name 'libblas*' -o -name 'libgfortran*' \) -print)
if [ -n "$found" ]; then
  echo "wheel_test.sh: the root is not minimal; it holds:" >&2
  echo "$found" >&2
  exit 1
fi
if in_root /bin/sh -c 'command -v swift swiftc' >/dev/null; then
  echo "wheel_test.sh: a swift binary is on the root's PATH" >&2
  exit 1
fi
if grep -qiE "openblas|libblas" <<<"$(in_root /sbin/ldconfig -p)"; then
  echo "wheel_test.sh: the root's dynamic linker knows a BLAS" >&2
  exit 1
fi
echo "== the root holds no Swift, no OpenBLAS, no BLAS $(elapsed)"

# numpy for the root's Python and glibc, downloaded on the host.
pyver=$(in_root python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
glibc=$(in_root /usr/bin/getconf GNU_LIBC_VERSION | awk '{print $2}')
wheel_py=$(basename "$wheel" | cut -d- -f3)
if [ "$wheel_py" != "cp${pyver/./}" ]; then
  echo "wheel_test.sh: the wheel is for $wheel_py but $suite's python3 is $pyver; build the wheel with Python $pyver" >&2
  exit 1
fi
requires=$(python3 - "$wheel" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            print(line.split(":", 1)[1].strip())
EOF
)
wheelhouse=$cache/wheelhouse-cp${pyver/./}
echo "== pip download $(echo "$requires" | tr '\n' ' ')for Python $pyver, glibc $glibc -> $wheelhouse $(elapsed)"
# pip takes the platform tags literally: every manylinux tag the root's glibc satisfies.
platforms=(--platform manylinux2014_x86_64)
for ((minor = ${glibc#*.}; minor >= 17; minor--)); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
# shellcheck disable=SC2086
python3 -m pip download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
  --abi "cp${pyver/./}" "${platforms[@]}" -d "$wheelhouse" $requires
mkdir -p "$root/wheelhouse"
cp "$wheelhouse"/*.whl "$wheel" "$root/wheelhouse/"
cp scripts/wheel_smoke.py "$root/tmp/wheel_smoke.py"

mount -t proc proc "$root/proc"
echo "== in the root: python3 -m venv /opt/venv; pip install $(basename "$wheel") $(elapsed)"
in_root python3 -m venv /opt/venv
in_root /opt/venv/bin/pip install -q --no-index --find-links /wheelhouse "/wheelhouse/$(basename "$wheel")"
in_root /opt/venv/bin/pip list --format=freeze
stray=$(find "$root" -xdev -name 'libopenblas*' -not -path '*/site-packages/metaweight.libs/*' -print)
if [ -n "$stray" ]; then
  echo "wheel_test.sh: OpenBLAS outside the wheel's metaweight.libs: $stray" >&2
  exit 1
fi
version=$(in_root /opt/venv/bin/python -m metaweight --version)
echo "python -m metaweight --version: $version"
echo "== in the root: scripts/wheel_smoke.py $(elapsed)"
in_root /opt/venv/bin/python /tmp/wheel_smoke.py
echo "wheel_test.sh: passed in $((SECONDS - start)) s"
