"""Builds metaweight's Swift core and CPython extension with the Swift package manager.

`pip install .` (or `pip install -e .`) runs `swift build -c release` for the `_metaweight_core`
product: the extension's C code, the C ABI and the Swift core are linked into one shared object
with the Swift runtime linked statically (`-static-stdlib`), so the installed package needs no
Swift toolchain at run time. The shared object is then installed as `metaweight/_core*.so`.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_swift() -> str:
    """Returns the `swift` driver: $SWIFT, PATH, or the toolchain at /opt/swift."""
    for candidate in (os.environ.get("SWIFT"), shutil.which("swift"), "/opt/swift/usr/bin/swift"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("metaweight needs the Swift toolchain (6.0+) to build: set $SWIFT or put swift on PATH")


class SwiftExtension(Extension):
    """A placeholder Extension whose shared object is produced by SwiftPM."""

    def __init__(self, name: str):
        super().__init__(name, sources=[])


class BuildSwift(build_ext):
    """Runs `swift build` and copies the product to where setuptools expects the extension."""

    def run(self):
        for ext in self.extensions:
            self.build_swift(ext)

    def build_swift(self, ext):
        swift = find_swift()
        env = dict(os.environ)
        env["METAWEIGHT_PYTHON_INCLUDE"] = sysconfig.get_paths()["include"]
        # $METAWEIGHT_SWIFT_SCRATCH (relative to the source root) lets a build use its own SwiftPM
        # scratch directory, e.g. scripts/wheel.sh next to another `pip install .`.
        scratch = os.path.join(ROOT, os.environ.get("METAWEIGHT_SWIFT_SCRATCH") or ".build-python")
        cmd = [
            swift, "build", "-c", "release", "--product", "_metaweight_core",
            "--scratch-path", scratch, "-Xswiftc", "-static-stdlib",
            "-Xlinker", "-s",
        ]
        print("metaweight: " + " ".join(cmd), flush=True)
        subprocess.check_call(cmd, cwd=ROOT, env=env)
        built = os.path.join(scratch, "release", "lib_metaweight_core.so")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built, target)
        os.chmod(target, 0o755)
        print(f"metaweight: installed extension {target}", flush=True)


def version() -> str:
    """The version, from its one place: MW_VERSION in the C header (the core returns the same)."""
    header = os.path.join(ROOT, "Sources", "CMetaweight", "include", "metaweight.h")
    with open(header, encoding="utf-8") as f:
        m = re.search(r'^#define MW_VERSION "([^"]+)"', f.read(), re.M)
    if not m:
        raise RuntimeError(f"metaweight: no MW_VERSION in {header}")
    return m.group(1)


if __name__ == "__main__":
    if sys.platform != "linux":
        print("metaweight: only Linux is supported by this build script", file=sys.stderr)
    setup(version=version(), ext_modules=[SwiftExtension("metaweight._core")], cmdclass={"build_ext": BuildSwift})
