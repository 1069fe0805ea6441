#!/usr/bin/env python3
"""Generate src/hl7/nist/tables.rs from the NIST Z22 (VXU^V04) and Z23 (ACK) profiles.

Inputs (data only, read with xml.etree):

* VXU-Z22_Profile.xml and ACK-Z23_Profile.xml -- NIST conformance profiles
  (message structure, segment definitions, datatype definitions);
* VXU-Z22_ValueSetLibrary.xml and ACK-Z23_ValueSetLibrary.xml -- value sets.

Give them either as a directory holding all four files (``--nist-dir DIR``) or one
by one (``--z22-profile``, ``--z23-profile``, ``--z22-valuesets``,
``--z23-valuesets``; each overrides the file from ``--nist-dir``).

Output (deterministic, no timestamps): ``Z22_STRUCTURE``, ``Z23_STRUCTURE`` (message
structure in profile order), ``Z22_SEGMENTS``, ``Z23_SEGMENTS`` and ``Z22_DATATYPES``,
``Z23_DATATYPES`` (sorted by id in byte order), and ``VALUE_SETS`` (union of both
libraries, Z22 wins, sorted by binding identifier; codes sorted by code in byte order,
first occurrence of a duplicated code wins; each code carries ``code^display^system`` escaped and
joined as the VXU writer sends it).  CVX, MVX, NDC and VIS value sets are
left out: src/hl7/codes/tables.rs (tools/gen_cdc_tables.py) carries those.

Usage:
    python3 tools/gen_profile_tables.py --nist-dir /work/shared/nist \\
        -o src/hl7/nist/tables.rs
    python3 tools/gen_profile_tables.py --nist-dir /work/shared/nist \\
        -o src/hl7/nist/tables.rs --check     # exit 1 if the file is stale
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from hl7text import hl7_coded

FILES = {
    "z22_profile": "VXU-Z22_Profile.xml",
    "z23_profile": "ACK-Z23_Profile.xml",
    "z22_valuesets": "VXU-Z22_ValueSetLibrary.xml",
    "z23_valuesets": "ACK-Z23_ValueSetLibrary.xml",
}

# Value sets maintained by tools/gen_cdc_tables.py (too big / maintained by CDC).
EXCLUDED_VALUE_SETS = frozenset(
    {"CVX", "MVX", "NDC_Sale", "NDC_Use", "PHVS_VISBarcodes_IIS", "PHVS_VISVaccines_IIS"}
)

USAGES = ("R", "RE", "C", "O", "X", "B", "W")
U16_MAX = 0xFFFF

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def warn(msg: str) -> None:
    print(f"gen_profile_tables: {msg}", file=sys.stderr)


def clean(text: str | None) -> str:
    """Replace control characters by spaces and trim; otherwise verbatim."""
    if text is None:
        return ""
    return CONTROL_RE.sub(" ", text).strip()


def rust_str(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def usage(value: str | None, where: str) -> str:
    v = clean(value)
    if v in USAGES:
        return f"Usage::{v}"
    warn(f"{where}: usage {value!r} is not one of {'/'.join(USAGES)}; mapped to O")
    return "Usage::O"


def card(value: str | None, where: str, attr: str) -> int:
    """Min / Max cardinality: '*' -> u16::MAX."""
    v = clean(value)
    if v == "*":
        return U16_MAX
    if not v.isdigit():
        raise SystemExit(f"gen_profile_tables: {where}: bad {attr} {value!r}")
    n = int(v)
    if n > U16_MAX:
        warn(f"{where}: {attr}={n} saturated to u16::MAX")
        n = U16_MAX
    return n


def length(value: str | None, where: str, attr: str) -> int:
    """MinLength / MaxLength: absent or '*' (the schema default, unbounded) -> 0."""
    v = clean(value)
    if v in ("", "*"):
        return 0
    if not v.isdigit():
        raise SystemExit(f"gen_profile_tables: {where}: bad {attr} {value!r}")
    n = int(v)
    if n > U16_MAX:
        warn(f"{where}: {attr}={n} saturated to u16::MAX")
        n = U16_MAX
    return n


def fmt_u16(n: int) -> str:
    return "u16::MAX" if n == U16_MAX else str(n)


# --------------------------------------------------------------------------- profiles


def group_name(raw: str | None) -> str:
    """'VXU_V04.ORDER.TIMING' -> 'TIMING'."""
    return clean(raw).rsplit(".", 1)[-1]


def structure(elem: ET.Element, where: str) -> list[dict]:
    items = []
    for child in elem:
        if child.tag == "Segment":
            items.append({
                "kind": "seg",
                "ref": clean(child.get("Ref")),
                "usage": usage(child.get("Usage"), f"{where}/Segment {child.get('Ref')}"),
                "min": card(child.get("Min"), where, "Min"),
                "max": card(child.get("Max"), where, "Max"),
            })
        elif child.tag == "Group":
            name = group_name(child.get("Name") or child.get("ID"))
            w = f"{where}/Group {name}"
            items.append({
                "kind": "group",
                "name": name,
                "usage": usage(child.get("Usage"), w),
                "min": card(child.get("Min"), w, "Min"),
                "max": card(child.get("Max"), w, "Max"),
                "children": structure(child, w),
            })
    return items


def element_def(e: ET.Element, where: str, with_card: bool) -> dict:
    d = {
        "name": clean(e.get("Name")),
        "usage": usage(e.get("Usage"), where),
        "datatype": clean(e.get("Datatype")),
        "min_len": length(e.get("MinLength"), where, "MinLength"),
        "max_len": length(e.get("MaxLength"), where, "MaxLength"),
        "binding": clean(e.get("Binding")),
    }
    if with_card:
        d["min"] = card(e.get("Min"), where, "Min")
        d["max"] = card(e.get("Max"), where, "Max")
    return d


def load_profile(path: Path, label: str) -> dict:
    root = ET.parse(path).getroot()
    messages = root.findall("./Messages/Message")
    if len(messages) != 1:
        raise SystemExit(f"gen_profile_tables: {path}: expected one <Message>, found {len(messages)}")
    msg = messages[0]
    struct = structure(msg, f"{label} {msg.get('StructID')}")

    segments = {}
    for seg in root.findall("./Segments/Segment"):
        sid = clean(seg.get("ID"))
        fields = [
            element_def(f, f"{label} segment {sid} field {i}", True)
            for i, f in enumerate(seg.findall("Field"), 1)
        ]
        segments[sid] = {
            "id": sid,
            "name": clean(seg.get("Name")),
            "description": clean(seg.get("Description")),
            "fields": fields,
        }

    datatypes = {}
    for dt in root.findall("./Datatypes/Datatype"):
        did = clean(dt.get("ID"))
        comps = [
            element_def(c, f"{label} datatype {did} component {i}", False)
            for i, c in enumerate(dt.findall("Component"), 1)
        ]
        datatypes[did] = {
            "id": did,
            "name": clean(dt.get("Name")),
            "description": clean(dt.get("Description")),
            "components": comps,
        }

    # Only segments the message structure uses.
    used = set()

    def walk(items):
        for it in items:
            if it["kind"] == "seg":
                used.add(it["ref"])
            else:
                walk(it["children"])

    walk(struct)
    missing = used - segments.keys()
    if missing:
        raise SystemExit(f"gen_profile_tables: {label}: undefined segments {sorted(missing)}")
    fix_segment_names(struct, segments)
    for sid in sorted(segments.keys() - used):
        warn(f"{label}: segment {sid} defined but not used by the message; left out")
    for sid, seg in segments.items():
        for i, f in enumerate(seg["fields"], 1):
            if f["datatype"] not in datatypes and f["datatype"] != "varies":
                warn(f"{label}: {sid}-{i} datatype {f['datatype']} has no definition")

    meta = root.find("MetaData")
    return {
        "struct": struct,
        "segments": [segments[k] for k in sorted(used)],
        "datatypes": [datatypes[k] for k in sorted(datatypes)],
        "message": msg.attrib,
        "meta": meta.attrib if meta is not None else {},
    }


def fix_segment_names(items: list[dict], segments: dict) -> None:
    """Give each segment reference the Name of the segment definition it points to."""
    for it in items:
        if it["kind"] == "seg":
            it["seg_name"] = segments[it["ref"]]["name"]
        else:
            fix_segment_names(it["children"], segments)


# --------------------------------------------------------------------------- value sets


def load_value_sets(path: Path, label: str) -> dict:
    root = ET.parse(path).getroot()
    out = {}
    for vs in root.iter("ValueSetDefinition"):
        vid = clean(vs.get("BindingIdentifier"))
        if vid in EXCLUDED_VALUE_SETS:
            continue
        if vid in out:
            warn(f"{label}: value set {vid} defined twice; first kept")
            continue
        codes = {}
        for ve in vs.iter("ValueElement"):
            code = clean(ve.get("Value"))
            entry = (code, clean(ve.get("DisplayName")), clean(ve.get("CodeSystem")))
            if code in codes:
                if codes[code] != entry:
                    warn(f"{label}: {vid} code {code!r} repeated with different data; first kept")
                continue
            codes[code] = entry
        out[vid] = {
            "id": vid,
            "name": clean(vs.get("Name")),
            "codes": [codes[k] for k in sorted(codes)],
        }
    return out


# --------------------------------------------------------------------------- emit


def emit_items(items: list[dict], indent: str, out: list[str]) -> None:
    for it in items:
        if it["kind"] == "seg":
            out.append(
                f"{indent}GroupItem::Segment {{ id: {rust_str(it['ref'])}, "
                f"name: {rust_str(it['seg_name'])}, usage: {it['usage']}, "
                f"min: {fmt_u16(it['min'])}, max: {fmt_u16(it['max'])} }},"
            )
        else:
            out.append(
                f"{indent}GroupItem::Group {{ name: {rust_str(it['name'])}, usage: {it['usage']}, "
                f"min: {fmt_u16(it['min'])}, max: {fmt_u16(it['max'])}, children: &["
            )
            emit_items(it["children"], indent + "    ", out)
            out.append(f"{indent}] }},")


def emit_structure(const: str, prof: dict, out: list[str]) -> None:
    m = prof["message"]
    out.append(
        f"/// {m.get('Type')}^{m.get('Event')} ({m.get('StructID')}) message structure of profile "
        f"{m.get('Identifier')}, in message order."
    )
    out.append("#[rustfmt::skip]")
    out.append(f"pub(crate) static {const}: &[GroupItem] = &[")
    body: list[str] = []
    emit_items(prof["struct"], "    ", body)
    out.extend(body)
    out.append("];")
    out.append("")


def emit_segments(const: str, label: str, prof: dict, out: list[str]) -> None:
    segs = prof["segments"]
    out.append(f"/// Segment definitions used by {label} ({len(segs)}), sorted by `id`; `fields[0]` is field 1.")
    out.append("#[rustfmt::skip]")
    out.append(f"pub(crate) static {const}: &[SegmentDef] = &[")
    for s in segs:
        out.append(
            f"    SegmentDef {{ id: {rust_str(s['id'])}, name: {rust_str(s['name'])}, "
            f"description: {rust_str(s['description'])}, fields: &["
        )
        for f in s["fields"]:
            out.append(
                f"        FieldDef {{ name: {rust_str(f['name'])}, usage: {f['usage']}, "
                f"min: {fmt_u16(f['min'])}, max: {fmt_u16(f['max'])}, datatype: {rust_str(f['datatype'])}, "
                f"min_len: {fmt_u16(f['min_len'])}, max_len: {fmt_u16(f['max_len'])}, "
                f"binding: {rust_str(f['binding'])} }},"
            )
        out.append("    ] },")
    out.append("];")
    out.append("")


def emit_datatypes(const: str, label: str, prof: dict, out: list[str]) -> None:
    dts = prof["datatypes"]
    out.append(
        f"/// Datatype definitions of {label} ({len(dts)}), sorted by `id`; `components[0]` is "
        "component 1, empty for primitives."
    )
    out.append("#[rustfmt::skip]")
    out.append(f"pub(crate) static {const}: &[DatatypeDef] = &[")
    for d in dts:
        head = (
            f"    DatatypeDef {{ id: {rust_str(d['id'])}, name: {rust_str(d['name'])}, "
            f"description: {rust_str(d['description'])}, components: &["
        )
        if not d["components"]:
            out.append(head + "] },")
            continue
        out.append(head)
        for c in d["components"]:
            out.append(
                f"        ComponentDef {{ name: {rust_str(c['name'])}, usage: {c['usage']}, "
                f"datatype: {rust_str(c['datatype'])}, min_len: {fmt_u16(c['min_len'])}, "
                f"max_len: {fmt_u16(c['max_len'])}, binding: {rust_str(c['binding'])} }},"
            )
        out.append("    ] },")
    out.append("];")
    out.append("")


def emit_value_sets(vsets: list[dict], out: list[str]) -> None:
    out.append(
        f"/// Value sets of the Z22 and Z23 libraries ({len(vsets)}; Z22 wins), sorted by `id`; "
        "codes sorted by code."
    )
    out.append(f"/// Left out (see src/hl7/codes): {', '.join(sorted(EXCLUDED_VALUE_SETS))}.")
    out.append("#[rustfmt::skip]")
    out.append("pub(crate) static VALUE_SETS: &[ValueSetDef] = &[")
    for v in vsets:
        head = f"    ValueSetDef {{ id: {rust_str(v['id'])}, name: {rust_str(v['name'])}, codes: &["
        if not v["codes"]:
            out.append(head + "] },")
            continue
        out.append(head)
        for code, display, system in v["codes"]:
            hl7 = rust_str(hl7_coded(code, display, system))
            out.append(f"        ({rust_str(code)}, {rust_str(display)}, {rust_str(system)}, {hl7}),")
        out.append("    ] },")
    out.append("];")


def generate(paths: dict[str, Path]) -> str:
    z22 = load_profile(paths["z22_profile"], "Z22")
    z23 = load_profile(paths["z23_profile"], "Z23")
    vs22 = load_value_sets(paths["z22_valuesets"], "Z22 value sets")
    vs23 = load_value_sets(paths["z23_valuesets"], "Z23 value sets")
    merged = dict(vs23)
    merged.update(vs22)  # Z22 wins
    vsets = [merged[k] for k in sorted(merged)]

    def meta(p: dict) -> str:
        m = p["meta"]
        return f"{m.get('Name', '?')} {m.get('Version', '?')} ({m.get('Date', '?')})"

    out = [
        "//! NIST Z22 (VXU^V04) and Z23 (ACK) conformance profile tables, generated by "
        "tools/gen_profile_tables.py from "
        + ", ".join(paths[k].name for k in ("z22_profile", "z23_profile", "z22_valuesets", "z23_valuesets"))
        + " — do not edit by hand.",
        "//!",
        f"//! Profiles: {meta(z22)}; {meta(z23)}.",
        "//! Segment, datatype and value-set tables are sorted by id in byte order (use `binary_search_by`).",
        "//! Cardinality `u16::MAX` means `*`; `max_len` 0 means no maximum (absent or `*`).",
        "",
        "use super::{ComponentDef, DatatypeDef, FieldDef, GroupItem, SegmentDef, Usage, ValueSetDef};",
        "",
    ]
    emit_structure("Z22_STRUCTURE", z22, out)
    emit_structure("Z23_STRUCTURE", z23, out)
    emit_segments("Z22_SEGMENTS", "Z22", z22, out)
    emit_segments("Z23_SEGMENTS", "Z23", z23, out)
    emit_datatypes("Z22_DATATYPES", "Z22", z22, out)
    emit_datatypes("Z23_DATATYPES", "Z23", z23, out)
    emit_value_sets(vsets, out)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nist-dir", type=Path, help="directory holding the four NIST XML files")
    for key, fname in FILES.items():
        ap.add_argument("--" + key.replace("_", "-"), type=Path, dest=key, help=f"path of {fname}")
    ap.add_argument("-o", "--output", type=Path, required=True, help="tables.rs to write (or compare with --check)")
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if OUTPUT differs from the generated text")
    args = ap.parse_args(argv)

    paths = {}
    for key, fname in FILES.items():
        p = getattr(args, key)
        if p is None:
            if args.nist_dir is None:
                ap.error(f"give --nist-dir or --{key.replace('_', '-')}")
            p = args.nist_dir / fname
        paths[key] = p

    text = generate(paths)
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"gen_profile_tables: {args.output} is out of date; regenerate with tools/gen_profile_tables.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
