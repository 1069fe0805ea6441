#!/usr/bin/env python3
"""Independent check: izrelay's VXUs parse with hl7apy into the right VXU_V04 groups.

hl7apy (PyPI) knows the *base* HL7 v2.5.1 structures, not the CDC IG. The differences it
cannot know about, documented in ../shared/research/cdc-vxu.md section 4.1, are handled here
and nowhere else:
  1. MSH-22/MSH-23 are v2.7.1 fields the IG pre-adopts; base 2.5.1 MSH ends at MSH-21, so
     they are removed before parsing (strict parsing rejects unknown fields).
  2. RXA-4 is R in base 2.5.1 but O in IG 1.5 (we omit it unless the profile asks);
     "Missing required child RXA.RXA_4" is expected and ignored.
  3. hl7apy's table 0396 predates the IG: coding systems CDCREC, NCIT, NIP001, CDCPHINVS,
     UCUM, cdcgs1vis, ISO639 ... are reported as warnings, which are ignored.
Everything else hl7apy reports is a failure. Usage: hl7apy_check.py FILE.hl7...
Exit 0 when every file passes, 1 otherwise; one line per file.
"""
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group
from hl7apy.exceptions import ValidationError
from hl7apy.parser import parse_message
from hl7apy.validation import Validator

EXPECTED_BASE_DIFFERENCES = ("Missing required child RXA.RXA_4",)


def strip_msh_22_23(segments):
    msh = segments[0].split("|")
    return ["|".join(msh[:21])] + segments[1:]


def shape(node):
    """The message tree as nested names: groups as (name, [children]), segments as names."""
    out = []
    for child in node.children:
        if isinstance(child, Group):
            out.append((child.name, shape(child)))
        else:
            out.append(child.name)
    return out


def expected_shape(segments):
    """What a correct VXU_V04 grouping of these segments looks like."""
    out, order, obs = [], None, None
    for seg in segments:
        sid = seg[:3]
        if sid == "ORC":
            order = ("VXU_V04_ORDER", [sid])
            out.append(order)
            obs = None
        elif sid in ("RXA", "RXR") and order is not None:
            order[1].append(sid)
        elif sid == "OBX" and order is not None:
            obs = ("VXU_V04_OBSERVATION", [sid])
            order[1].append(obs)
        elif sid == "NTE" and obs is not None:
            obs[1].append(sid)
        else:
            out.append(sid)
    return out


def check(path):
    text = open(path, encoding="utf-8").read()
    segments = [s for s in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if s]
    segments = strip_msh_22_23(segments)
    msg = parse_message("\r".join(segments), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    got, want = shape(msg), expected_shape(segments)
    if got != want:
        return f"wrong groups: got {got}, want {want}"
    try:
        Validator.validate(msg)
    except ValidationError as e:
        problems = [str(x) for x in (e.args[0] if e.args and isinstance(e.args[0], list) else [e])]
        unexpected = [p for p in problems if not any(d in p for d in EXPECTED_BASE_DIFFERENCES)]
        if unexpected:
            return "; ".join(unexpected)
    return None


def main(paths):
    failed = 0
    for path in paths:
        try:
            problem = check(path)
        except Exception as e:  # hl7apy raises many types while parsing strictly
            problem = f"{type(e).__name__}: {e}"
        print(f"{path}: {'ok' if problem is None else 'FAIL ' + problem}")
        failed += problem is not None
    print(f"{len(paths) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
