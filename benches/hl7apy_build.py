#!/usr/bin/env python3
"""hl7apy building the same VXU izrelay generates (benches/hl7.rs "record_to_vxu"), for
BENCHMARKS.md. Builds the message of tests/fixtures/golden/01-*.hl7 field by field with
hl7apy's object model and serialises it; reports the mean time per message.

    python3 benches/hl7apy_build.py [ITERATIONS]
"""
import pathlib
import sys
import time

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_segment

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests/fixtures/golden/01-adult-covid-pfizer-309-ndc.hl7"


def build(lines):
    msg = Message("VXU_V04", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT)
    # MSH: base 2.5.1 has 21 fields, so MSH-22/23 are left out (see tests/hl7apy_check.py).
    msh = lines[0].split("|")
    for i, value in enumerate(msh[2:21], start=3):
        if value:
            setattr(msg.msh, f"msh_{i}", value)
    order = None
    for line in lines[1:]:
        seg = parse_segment(line, version="2.5.1")
        if seg.name == "ORC":
            order = msg.add_group("VXU_V04_ORDER")
            order.add(seg)
        elif seg.name in ("RXA", "RXR"):
            order.add(seg)
        elif seg.name == "OBX":
            obs = order.add_group("VXU_V04_OBSERVATION")
            obs.add(seg)
        else:
            msg.add(seg)
    return msg.to_er7()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    lines = [l for l in GOLDEN.read_text().split("\n") if l]
    out = build(lines)
    assert out.count("\r") >= len(lines) - 1, "hl7apy built fewer segments than the golden message"
    start = time.perf_counter()
    for _ in range(n):
        build(lines)
    per = (time.perf_counter() - start) / n
    print(f"hl7apy 1.3.5 build VXU ({len(out)} bytes): {per * 1e6:.1f} µs per message over {n} runs")


if __name__ == "__main__":
    main()
