"""Summarises a valgrind memcheck XML file: errors and "definitely lost" leaks whose stacks reach our code.

Our code = frames in streamscore_native's _core extension (ss:: functions, bindings). Exit status 1 when any such
error or leak exists; third-party totals are printed for information.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def ours(frame: ET.Element) -> bool:
    obj = frame.findtext("obj") or ""
    fn = frame.findtext("fn") or ""
    return "streamscore_native" in obj or "/_core." in obj or fn.startswith("ss::")


def main(path: str) -> int:
    root = ET.parse(path).getroot()
    kinds: Counter[str] = Counter()
    our_errors = []
    definitely_lost_bytes = {"ours": 0, "other": 0}
    for err in root.iter("error"):
        kind = err.findtext("kind") or "?"
        kinds[kind] += 1
        frames = list(err.iter("frame"))
        mine = any(ours(f) for f in frames)
        if kind.startswith("Leak_"):
            if kind == "Leak_DefinitelyLost":
                leaked = int(err.findtext("xwhat/leakedbytes") or 0)
                definitely_lost_bytes["ours" if mine else "other"] += leaked
                if mine:
                    our_errors.append(err)
        elif mine:
            our_errors.append(err)
    print(f"valgrind: error kinds {dict(kinds)}")
    print(f"valgrind: definitely lost in our code: {definitely_lost_bytes['ours']} bytes; "
          f"elsewhere (interpreter, libraries): {definitely_lost_bytes['other']} bytes")
    for err in our_errors:
        print("---", err.findtext("kind"), err.findtext("what") or err.findtext("xwhat/text"))
        for f in list(err.iter("frame"))[:15]:
            print("   ", f.findtext("fn"), f.findtext("obj"), f.findtext("file"), f.findtext("line"))
    print(f"valgrind: {len(our_errors)} errors/leaks in streamscore's code")
    return 1 if our_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
