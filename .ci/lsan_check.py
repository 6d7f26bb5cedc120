#!/usr/bin/env python3
"""Reads a `swift test` log run under AddressSanitizer/LeakSanitizer and fails (exit 1) on any
AddressSanitizer error or any leak whose allocation stack touches metaweight's own code
(Sources/: the Metaweight* Swift targets, MetaweightCABI, CMetaweight). Leaks of the XCTest harness on Linux
(test-case objects it never releases, and what their setUp stored) are listed but not failures.

    python3 .ci/lsan_check.py swift-test-asan.log
"""

from __future__ import annotations

import re
import sys

OURS = re.compile(
    r"/Sources/|\$s(?:16MetaweightTensor|16MetaweightLayers|15MetaweightOptim|18MetaweightTraining"
    r"|19MetaweightWeighting|13MetaweightLAW|14MetaweightCABI)|\bmw_[a-z_]+\b"
)


def main(path: str) -> int:
    text = open(path, errors="replace").read()
    if "ERROR: AddressSanitizer" in text:
        print("lsan_check: AddressSanitizer reported an error (see the log)")
        return 1
    blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of )", text)
    ours, harness, harness_bytes = [], 0, 0
    for b in blocks[1:]:
        head = b.split("\n", 1)[0]
        frames = b.split("\n\n", 1)[0]
        if OURS.search(frames):
            ours.append(frames)
        else:
            harness += 1
            m = re.match(r"\w+ leak of (\d+) byte", head)
            harness_bytes += int(m.group(1)) if m else 0
    print(f"lsan_check: {len(ours)} leak(s) in metaweight code; {harness} harness leak record(s) ignored "
          f"({harness_bytes} bytes, XCTest on Linux)")
    for f in ours:
        print(f)
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
