#!/usr/bin/env python3
"""Generate src/hl7/codes/tables.rs (CVX, MVX, NDC and VIS tables) from CDC code files.

Inputs (data only):

* The CDC code files mirrored in the public repository ``immregistries/codebase``
  under ``cdc-source/``: cvx.xml, mvx.xml, NDC_Unit_sale.txt, NDC_Unit_use.txt,
  NDC_Linker.txt, vis.xml, cvxvis.xml.  Give them either as plain files
  (``--codebase-dir DIR``) or straight from a git directory of that repository
  (``--codebase-git GITDIR [--rev REV]``, read with ``git show``).
* Optionally the NIST 2018 VXU Z22 value-set library (``--nist-vs PATH``), whose
  CVX, MVX, NDC_Sale, NDC_Use, PHVS_VISBarcodes_IIS and PHVS_VISVaccines_IIS value
  sets fill gaps (the CDC files win wherever both have a code).
* Optionally the project research notes (``--covid-md PATH``, §5.2 and §5.3 tables
  of cdc-vxu.md) which fill COVID-19 NDC / fact-sheet gaps the same way.

The output is deterministic: every table is sorted by its key in byte order,
with no duplicate keys, and no generation timestamp is written.

Usage:
    python3 tools/gen_cdc_tables.py --codebase-dir /tmp/cdc-source \\
        --nist-vs /work/shared/nist/VXU-Z22_ValueSetLibrary.xml \\
        --source-label "immregistries/codebase@<commit> (<date>)" \\
        -o src/hl7/codes/tables.rs
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from hl7text import hl7_coded

CDC_FILES = (
    "cvx.xml",
    "mvx.xml",
    "NDC_Unit_sale.txt",
    "NDC_Unit_use.txt",
    "NDC_Linker.txt",
    "vis.xml",
    "cvxvis.xml",
)

CVX_STATUS = {
    "active": "Active",
    "inactive": "Inactive",
    "non-us": "NonUs",
    "non us": "NonUs",
    "never active": "NeverActive",
    "pending": "Pending",
}

NDC_RE = re.compile(r"^\d{5}-\d{4}-\d{2}$")
GDTI_RE = re.compile(r"^253088698300\d{12}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def warn(msg: str) -> None:
    print(f"gen_cdc_tables: {msg}", file=sys.stderr)


def clean(text: str | None) -> str:
    """Strip control characters, collapse whitespace runs, trim."""
    if text is None:
        return ""
    text = CONTROL_RE.sub(" ", text)
    return " ".join(text.split())


def rust_str(text: str) -> str:
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def byte_key(text: str) -> bytes:
    return text.encode("utf-8")


def short_key(code: str) -> int:
    """A code of up to 7 bytes as codes::short_key packs it: the bytes left-aligned, then the length."""
    b = code.encode("utf-8")
    if len(b) > 7:
        raise SystemExit(f"internal error: code {code!r} is too long to pack")
    return int.from_bytes(b.ljust(7, b"\0") + bytes([len(b)]), "big")


def ndc_key(ndc: str) -> int:
    """A 5-4-2 NDC as codes::ndc_key packs it: the number its eleven digits spell."""
    if not NDC_RE.match(ndc):
        raise SystemExit(f"internal error: NDC {ndc!r} is not in 5-4-2 form")
    return int(ndc.replace("-", ""))


def vis_key(gdti: str) -> tuple[int, int]:
    """A 24-digit VIS string as codes::vis_key packs it: its two 12-digit halves as numbers."""
    if not GDTI_RE.match(gdti):
        raise SystemExit(f"internal error: VIS string {gdti!r} is not 24 digits")
    return int(gdti[:12]), int(gdti[12:])


def render_keys(w, name: str, table: str, rust_type: str, keys: list, per_line: int, fmt) -> None:
    """The packed keys of a table, in its order, for binary searches that compare integers."""
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise SystemExit(f"internal error: {name} keys do not keep the table's order")
    w(f"/// `{table}`'s keys packed as integers, in table order (see `codes::{name.lower()}_key`).")
    w("#[rustfmt::skip]")
    w(f"pub(crate) static {name.upper()}_KEYS: &[{rust_type}] = &[")
    for i in range(0, len(keys), per_line):
        w("    " + " ".join(fmt(k) + "," for k in keys[i:i + per_line]))
    w("];")
    w("")


def normalize_ndc(raw: str) -> str | None:
    """Return the 11-digit 5-4-2 dashed form of an NDC, or None if it cannot be read."""
    raw = clean(raw)
    if NDC_RE.match(raw):
        return raw
    parts = raw.split("-")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        lab, prod, pkg = parts
        if len(lab) <= 5 and len(prod) <= 4 and len(pkg) <= 2:
            return f"{lab.zfill(5)}-{prod.zfill(4)}-{pkg.zfill(2)}"
    digits = re.sub(r"\D", "", raw)
    if len(digits) == 11 and "-" not in raw:
        return f"{digits[:5]}-{digits[5:9]}-{digits[9:]}"
    return None


def us_date(text: str | None) -> str | None:
    """M/D/YYYY -> YYYY-MM-DD."""
    text = clean(text)
    m = re.match(r"^(\d{1,2})/(\d{1,2})/(\d{4})", text)
    if not m:
        return None
    mo, d, y = (int(g) for g in m.groups())
    return f"{y:04d}-{mo:02d}-{d:02d}"


def cvx_sort_num(code: str) -> tuple[int, str]:
    return (int(code), code) if code.isdigit() else (10**9, code)


# ---------------------------------------------------------------------------
# Reading inputs


class Source:
    """Either a directory of plain files or a git directory + revision."""

    def __init__(self, directory: Path | None, git_dir: Path | None, rev: str, subdir: str):
        self.directory = directory
        self.git_dir = git_dir
        self.rev = rev
        self.subdir = subdir.strip("/")

    def read(self, name: str) -> bytes:
        if self.directory is not None:
            return (self.directory / name).read_bytes()
        assert self.git_dir is not None
        spec = f"{self.rev}:{self.subdir}/{name}" if self.subdir else f"{self.rev}:{name}"
        return subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "show", spec],
            check=True,
            capture_output=True,
        ).stdout

    def describe(self) -> str | None:
        if self.git_dir is None:
            return None
        out = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "log", "-1", "--format=%H %cs", self.rev, "--",
             self.subdir or "."],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return f"immregistries/codebase@{out[0]} (cdc-source last changed {out[1]})"


def parse_xml(data: bytes) -> ET.Element:
    return ET.fromstring(data)


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def pipe_rows(data: bytes, ncols: int, name: str) -> list[list[str]]:
    text = data.decode("utf-8", errors="replace") if _is_utf8(data) else data.decode("latin-1")
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) < ncols:
            warn(f"{name}:{lineno}: expected {ncols} columns, got {len(cols)}; skipped")
            continue
        rows.append(cols)
    return rows


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@dataclass
class Cvx:
    code: str
    desc: str
    status: str


@dataclass
class Mvx:
    code: str
    name: str
    active: bool


@dataclass
class Ndc:
    ndc: str
    kind: str  # "UnitOfSale" | "UnitOfUse"
    cvx: str
    mvx: str
    name: str


@dataclass
class Vis:
    gdti: str
    document: str
    edition: str
    current: bool


def read_cvx(src: Source) -> dict[str, Cvx]:
    out: dict[str, Cvx] = {}
    for info in parse_xml(src.read("cvx.xml")):
        code = clean(info.findtext("CVXCode"))
        status_text = clean(info.findtext("Status")).lower()
        status = CVX_STATUS.get(status_text)
        if not code:
            continue
        if status is None:
            warn(f"cvx.xml: CVX {code}: unknown status {status_text!r}; mapped to Inactive")
            status = "Inactive"
        if code in out:
            warn(f"cvx.xml: duplicate CVX {code}; first kept")
            continue
        out[code] = Cvx(code, clean(info.findtext("ShortDescription")), status)
    return out


def read_mvx(src: Source) -> dict[str, Mvx]:
    out: dict[str, Mvx] = {}
    for info in parse_xml(src.read("mvx.xml")):
        names = [clean(n.text) for n in info if local(n.tag) == "Name"]
        values = [clean(v.text) for v in info if local(v.tag) == "Value"]
        rec = dict(zip(names, values))
        code = rec.get("MVX_CODE", "")
        if not code:
            continue
        if code in out:
            warn(f"mvx.xml: duplicate MVX {code}; first kept")
            continue
        out[code] = Mvx(code, rec.get("Manufacturer Name", ""), rec.get("Status", "").lower() == "active")
    return out


def read_vis(src: Source) -> dict[str, Vis]:
    out: dict[str, Vis] = {}
    for info in parse_xml(src.read("vis.xml")):
        rec = {local(c.tag): clean(c.text) for c in info}
        gdti = rec.get("VIS_encoded_string", "")
        if not GDTI_RE.match(gdti):
            warn(f"vis.xml: bad encoded string {gdti!r}; skipped")
            continue
        edition = us_date(rec.get("Edition_Date"))
        if edition is None:
            warn(f"vis.xml: {gdti}: bad edition date {rec.get('Edition_Date')!r}; skipped")
            continue
        if gdti in out:
            warn(f"vis.xml: duplicate {gdti}; first kept")
            continue
        out[gdti] = Vis(gdti, rec.get("VIS_Document_Type_Description", ""), edition,
                        rec.get("status", "").lower() == "current")
    return out


def read_cvxvis(src: Source) -> set[str]:
    cvx = set()
    for info in parse_xml(src.read("cvxvis.xml")):
        code = clean(info.findtext("CVXCode"))
        if code:
            cvx.add(code)
    return cvx


@dataclass
class NdcRow:
    inner_id: str
    ndc: str
    proprietary: str
    labeler: str
    cvx: str


def read_ndc_rows(src: Source) -> tuple[list[NdcRow], list[NdcRow], list[list[str]]]:
    # NDC_Unit_sale.txt: id|labeler|product|package|proprietary|generic|labeler name|start|end|
    #                    package desc|route|last updated|CVX|CVX desc|NDC11|GTIN
    # NDC_Unit_use.txt:  id|labeler|product|package|proprietary|generic|labeler name|start|end|
    #                    package desc|GTIN|CVX|CVX desc|no-inner-package flag|NDC11|last updated|GTIN
    # NDC_Linker.txt:    linker id|unit-of-sale id|unit-of-use id|MVX
    sale, use = [], []
    for cols in pipe_rows(src.read("NDC_Unit_sale.txt"), 15, "NDC_Unit_sale.txt"):
        ndc = normalize_ndc(cols[14])
        if ndc is None:
            warn(f"NDC_Unit_sale.txt: bad NDC {cols[14]!r}; skipped")
            continue
        sale.append(NdcRow(clean(cols[0]), ndc, clean(cols[4]), clean(cols[6]), clean(cols[12])))
    for cols in pipe_rows(src.read("NDC_Unit_use.txt"), 15, "NDC_Unit_use.txt"):
        ndc = normalize_ndc(cols[14])
        if ndc is None:
            warn(f"NDC_Unit_use.txt: bad NDC {cols[14]!r}; skipped")
            continue
        use.append(NdcRow(clean(cols[0]), ndc, clean(cols[4]), clean(cols[6]), clean(cols[11])))
    linker = [[clean(c) for c in cols[:4]] for cols in pipe_rows(src.read("NDC_Linker.txt"), 4, "NDC_Linker.txt")]
    return sale, use, linker


# ---------------------------------------------------------------------------
# NDC merge


def build_ndc(sale: list[NdcRow], use: list[NdcRow], linker: list[list[str]],
              mvx_table: dict[str, Mvx], notes: list[str]) -> dict[str, Ndc]:
    by_id = {"s": collections.defaultdict(list), "u": collections.defaultdict(list)}
    for r in sale:
        by_id["s"][r.inner_id].append(r)
    for r in use:
        by_id["u"][r.inner_id].append(r)

    # MVX candidates per (kind, ndc): list of (linker id, mvx)
    mvx_votes: dict[tuple[str, str], list[tuple[int, str]]] = collections.defaultdict(list)
    dangling = 0
    for lid, sid, uid, mvx in linker:
        s_rows, u_rows = by_id["s"].get(sid, []), by_id["u"].get(uid, [])
        try:
            lid_n = int(lid)
        except ValueError:
            lid_n = -1
        if not s_rows or not u_rows:
            # One side is missing from the NDC files: the row still names the MVX of the other.
            dangling += 1
            for tag, rows in (("s", s_rows), ("u", u_rows)):
                for r in rows:
                    mvx_votes[(tag, r.ndc)].append((lid_n, mvx))
            continue
        pairs = [(s, u) for s in s_rows for u in u_rows]
        # Inner ids are occasionally reused for unrelated products: keep the pairs whose
        # labeler code agrees, then those whose CVX agrees, when that narrows things down.
        for pred in (lambda s, u: s.ndc[:5] == u.ndc[:5], lambda s, u: s.cvx == u.cvx):
            narrowed = [(s, u) for s, u in pairs if pred(s, u)]
            if narrowed:
                pairs = narrowed
        for s, u in pairs:
            mvx_votes[("s", s.ndc)].append((lid_n, mvx))
            mvx_votes[("u", u.ndc)].append((lid_n, mvx))
    if dangling:
        notes.append(f"NDC_Linker.txt: {dangling} rows point at an inner id missing from one NDC file; "
                     "their MVX is still used for the side that exists")

    # Fallback MVX per labeler code, from linked rows.
    labeler_votes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (_, ndc), votes in mvx_votes.items():
        for _, m in votes:
            labeler_votes[ndc[:5]][m] += 1

    def pick_mvx(kind: str, ndc: str) -> str | None:
        votes = mvx_votes.get((kind, ndc))
        if votes:
            distinct = {m for _, m in votes}
            # prefer an MVX CDC lists as active, then the most recent linker row
            best = max(votes, key=lambda v: (mvx_table.get(v[1], Mvx("", "", False)).active, v[0], v[1]))
            if len(distinct) > 1:
                notes.append(f"NDC {ndc}: linked to MVX {', '.join(sorted(distinct))}; chose {best[1]}")
            return best[1]
        return None

    def pick_cvx(rows: list[NdcRow]) -> str:
        codes = sorted({r.cvx for r in rows if r.cvx}, key=cvx_sort_num)
        if len(codes) > 1:
            notes.append(f"NDC {rows[0].ndc}: CDC maps it to CVX {', '.join(codes)}; table keeps {codes[0]}")
        return codes[0] if codes else ""

    out: dict[str, Ndc] = {}
    for kind_tag, kind, rows in (("s", "UnitOfSale", sale), ("u", "UnitOfUse", use)):
        grouped: dict[str, list[NdcRow]] = collections.defaultdict(list)
        for r in rows:
            grouped[r.ndc].append(r)
        for ndc, rs in grouped.items():
            mvx = pick_mvx(kind_tag, ndc) or pick_mvx("u" if kind_tag == "s" else "s", ndc)
            if mvx is None:
                lab = labeler_votes.get(ndc[:5])
                if lab:
                    mvx = sorted(lab.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                    notes.append(f"NDC {ndc}: no NDC_Linker row; MVX {mvx} taken from labeler code {ndc[:5]}")
                else:
                    mvx = ""
                    notes.append(f"NDC {ndc}: no MVX could be determined")
            names = sorted({r.proprietary for r in rs if r.proprietary})
            entry = Ndc(ndc, kind, pick_cvx(rs), mvx, names[0] if names else "")
            if ndc in out:
                # Same NDC in both files: the package is its own unit of use. Keep one
                # entry, marked UnitOfUse (use rows come second).
                prev = out[ndc]
                if (prev.cvx, prev.mvx) != (entry.cvx, entry.mvx):
                    notes.append(f"NDC {ndc}: sale and use rows disagree ({prev.cvx}/{prev.mvx} vs "
                                 f"{entry.cvx}/{entry.mvx}); unit-of-use row kept")
                if not entry.mvx:
                    entry.mvx = prev.mvx
            out[ndc] = entry
    return out


# ---------------------------------------------------------------------------
# Supplements


def read_nist(path: Path) -> dict[str, list[tuple[str, str]]]:
    root = ET.parse(path).getroot()
    sets: dict[str, list[tuple[str, str]]] = {}
    for vs in root.iter():
        if local(vs.tag) != "ValueSetDefinition":
            continue
        sets[vs.get("BindingIdentifier", "")] = [
            (clean(e.get("Value")), clean(e.get("DisplayName")))
            for e in vs
            if local(e.tag) == "ValueElement"
        ]
    return sets


def gdti_edition(gdti: str) -> str | None:
    """The last six digits of a CDC VIS GDTI are the edition date YYMMDD."""
    y, m, d = gdti[-6:-4], gdti[-4:-2], gdti[-2:]
    if not (1 <= int(m) <= 12 and 1 <= int(d) <= 31):
        return None
    return f"20{y}-{m}-{d}"


def merge_nist(sets, cvx, mvx, ndc, vis, vis_vaccines, notes) -> None:
    added = collections.Counter()
    for code, name in sets.get("CVX", []):
        if code and code not in cvx:
            status = "NonUs" if "non-us" in name.lower() else "Inactive"
            cvx[code] = Cvx(code, name, status)
            added["CVX"] += 1
            notes.append(f"CVX {code} only in NIST 2018 list; added with status {status}")
    for code, name in sets.get("MVX", []):
        if code and code not in mvx:
            mvx[code] = Mvx(code, name, False)
            added["MVX"] += 1
            notes.append(f"MVX {code} only in NIST 2018 list; added as inactive")
    # NDC: NIST gives no CVX/MVX, so borrow them from a CDC sibling package
    # (same labeler + product code) when all siblings agree.
    siblings: dict[str, list[Ndc]] = collections.defaultdict(list)
    for e in ndc.values():
        siblings[e.ndc[:10]].append(e)
    for set_name, kind in (("NDC_Sale", "UnitOfSale"), ("NDC_Use", "UnitOfUse")):
        for raw, name in sets.get(set_name, []):
            code = normalize_ndc(raw)
            if code is None:
                notes.append(f"NIST {set_name} {raw!r}: unreadable NDC; skipped")
                continue
            if code in ndc:
                continue  # CDC wins (NIST 2018 sometimes files a package under the other kind)
            sib = siblings.get(code[:10], [])
            combos = {(s.cvx, s.mvx, s.name) for s in sib}
            if len({(c, m) for c, m, _ in combos}) == 1:
                c, m, n = sorted(combos)[0]
                ndc[code] = Ndc(code, kind, c, m, n)
                added["NDC"] += 1
                notes.append(f"NDC {code} ({set_name}, NIST 2018 {raw!r}) not in CDC files; CVX {c}/MVX {m} "
                             f"taken from CDC package(s) of the same product")
            else:
                notes.append(f"NDC {code} ({set_name}, NIST 2018: {name!r}) not in CDC files and no CDC "
                             f"sibling to take CVX/MVX from; left out")
    for code, name in sets.get("PHVS_VISBarcodes_IIS", []):
        if code in vis or not GDTI_RE.match(code):
            continue
        ed = gdti_edition(code)
        if ed is None:
            notes.append(f"VIS {code} (NIST): cannot read edition date; skipped")
            continue
        vis[code] = Vis(code, name, ed, False)
        added["VIS"] += 1
        notes.append(f"VIS {code} only in NIST 2018 list; added as not current")
    for code, _ in sets.get("PHVS_VISVaccines_IIS", []):
        if code:
            vis_vaccines.add(code)
    if added:
        notes.append("NIST supplement added: " + ", ".join(f"{k} {v}" for k, v in sorted(added.items())))


def merge_covid_md(path: Path, ndc, vis, mvx, notes) -> None:
    """Fill gaps from the §5.2 (NDC) and §5.3 (VIS) markdown tables of cdc-vxu.md."""
    text = path.read_text(encoding="utf-8")
    added = collections.Counter()
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip().strip("`*").strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].isdigit() and NDC_RE.match(cells[4]) and NDC_RE.match(cells[6]):
            cvx_code, name, _, m = cells[0], cells[1], cells[2], cells[3]
            for code, kind in ((cells[4], "UnitOfSale"), (cells[6], "UnitOfUse")):
                if code in ndc:
                    e = ndc[code]
                    if (e.cvx, e.mvx) != (cvx_code, m):
                        notes.append(f"NDC {code}: research notes say CVX {cvx_code}/MVX {m}, CDC files "
                                     f"say {e.cvx}/{e.mvx}; CDC kept")
                    continue
                ndc[code] = Ndc(code, kind, cvx_code, m, clean(name))
                added["NDC"] += 1
                notes.append(f"NDC {code} only in research notes §5.2; added")
        elif len(cells) == 4 and GDTI_RE.match(cells[2]):
            gdti = cells[2]
            if gdti in vis:
                continue
            ed = us_date(cells[1])
            if ed is None:
                continue
            vis[gdti] = Vis(gdti, clean(cells[0]), ed, cells[3].lower() == "current")
            added["VIS"] += 1
            notes.append(f"VIS {gdti} only in research notes §5.3; added")
    if added:
        notes.append("research-notes supplement added: " + ", ".join(f"{k} {v}" for k, v in sorted(added.items())))


# ---------------------------------------------------------------------------
# Output


def render(label: str, cvx, mvx, ndc, vis, vis_vaccines) -> str:
    def sort_vals(d):
        return [d[k] for k in sorted(d, key=byte_key)]

    lines: list[str] = []
    w = lines.append
    w(f"//! CDC code tables (CVX, MVX, NDC, VIS) generated by tools/gen_cdc_tables.py from {label} — do not edit by hand.")
    w("//!")
    w("//! Sources: CDC files cvx.xml, mvx.xml, NDC_Unit_sale.txt, NDC_Unit_use.txt, NDC_Linker.txt,")
    w("//! vis.xml and cvxvis.xml (folder `cdc-source/` of immregistries/codebase), gaps filled from")
    w("//! the NIST 2018 VXU Z22 value-set library. See tools/CDC_TABLES.md for how to regenerate.")
    w("//! Every table is sorted by its key in byte order with unique keys (use `binary_search_by`).")
    w("")
    w("use super::{CvxEntry, CvxStatus, MvxEntry, NdcEntry, NdcKind, VisEntry};")
    w("")
    w(f"/// CVX codes ({len(cvx)}), sorted by `code`.")
    w("#[rustfmt::skip]")
    w("pub(crate) static CVX_TABLE: &[CvxEntry] = &[")
    for e in sort_vals(cvx):
        unspecified = b"unspecified" in e.desc.encode("utf-8").lower()  # ASCII case only, as in Rust
        w(f"    CvxEntry {{ code: {rust_str(e.code)}, short_description: {rust_str(e.desc)}, "
          f"status: CvxStatus::{e.status}, unspecified: {'true' if unspecified else 'false'}, "
          f"hl7: {rust_str(hl7_coded(e.code, e.desc, 'CVX'))} }},")
    w("];")
    w("")
    render_keys(w, "CVX", "CVX_TABLE", "u64", [short_key(e.code) for e in sort_vals(cvx)], 6, lambda k: f"{k:#018x}")
    w(f"/// MVX manufacturer codes ({len(mvx)}), sorted by `code`.")
    w("#[rustfmt::skip]")
    w("pub(crate) static MVX_TABLE: &[MvxEntry] = &[")
    for e in sort_vals(mvx):
        w(f"    MvxEntry {{ code: {rust_str(e.code)}, name: {rust_str(e.name)}, "
          f"active: {'true' if e.active else 'false'}, hl7: {rust_str(hl7_coded(e.code, e.name, 'MVX'))} }},")
    w("];")
    w("")
    render_keys(w, "MVX", "MVX_TABLE", "u64", [short_key(e.code) for e in sort_vals(mvx)], 6, lambda k: f"{k:#018x}")
    w(f"/// NDC unit-of-sale and unit-of-use codes ({len(ndc)}), 11-digit 5-4-2 form, sorted by `ndc`.")
    w("/// An NDC that CDC lists both as unit of sale and unit of use appears once, as `UnitOfUse`.")
    w("#[rustfmt::skip]")
    w("pub(crate) static NDC_TABLE: &[NdcEntry] = &[")
    for e in sort_vals(ndc):
        w(f"    NdcEntry {{ ndc: {rust_str(e.ndc)}, kind: NdcKind::{e.kind}, cvx: {rust_str(e.cvx)}, "
          f"mvx: {rust_str(e.mvx)}, name: {rust_str(e.name)}, hl7: {rust_str(hl7_coded(e.ndc, e.name, 'NDC'))} }},")
    w("];")
    w("")
    render_keys(w, "NDC", "NDC_TABLE", "u64", [ndc_key(e.ndc) for e in sort_vals(ndc)], 8, str)
    w(f"/// VIS and EUA fact-sheet editions ({len(vis)}), sorted by fully encoded GDTI string.")
    w("#[rustfmt::skip]")
    w("pub(crate) static VIS_TABLE: &[VisEntry] = &[")
    for e in sort_vals(vis):
        w(f"    VisEntry {{ gdti: {rust_str(e.gdti)}, document: {rust_str(e.document)}, "
          f"edition: {rust_str(e.edition)}, current: {'true' if e.current else 'false'}, "
          f"hl7: {rust_str(hl7_coded(e.gdti, e.document, 'cdcgs1vis'))} }},")
    w("];")
    w("")
    render_keys(w, "VIS", "VIS_TABLE", "(u64, u64)", [vis_key(e.gdti) for e in sort_vals(vis)], 4, lambda k: f"({k[0]}, {k[1]})")
    vv = sorted(vis_vaccines, key=byte_key)
    w(f"/// CVX codes ({len(vv)}) for which a VIS or EUA fact sheet exists, sorted.")
    w("#[rustfmt::skip]")
    w("pub(crate) static VIS_VACCINES: &[&str] = &[")
    for i in range(0, len(vv), 12):
        w("    " + " ".join(rust_str(c) + "," for c in vv[i:i + 12]))
    w("];")
    return "\n".join(lines) + "\n"


def check_sorted(name: str, keys: list[str]) -> None:
    b = [byte_key(k) for k in keys]
    if b != sorted(b) or len(set(b)) != len(b):
        raise SystemExit(f"internal error: {name} not strictly sorted")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--codebase-dir", type=Path, help="directory holding the cdc-source files as plain files")
    g.add_argument("--codebase-git", type=Path, help="git directory of immregistries/codebase (no work tree needed)")
    ap.add_argument("--rev", default="HEAD", help="revision for --codebase-git (default HEAD)")
    ap.add_argument("--subdir", default="cdc-source", help="folder inside the repository (default cdc-source)")
    ap.add_argument("--nist-vs", type=Path, help="NIST VXU-Z22_ValueSetLibrary.xml (fills gaps)")
    ap.add_argument("--covid-md", type=Path, help="research notes cdc-vxu.md (§5.2/§5.3 fill COVID gaps)")
    ap.add_argument("--source-label", help="text naming the source revision for the file header")
    ap.add_argument("-o", "--output", type=Path, required=True, help="Rust file to write")
    ap.add_argument("--notes", type=Path, help="also write the merge notes to this file")
    args = ap.parse_args(argv)

    src = Source(args.codebase_dir, args.codebase_git, args.rev, args.subdir)
    label = args.source_label or src.describe() or "CDC code files (immregistries/codebase cdc-source)"
    notes: list[str] = []

    cvx = read_cvx(src)
    mvx = read_mvx(src)
    vis = read_vis(src)
    vis_vaccines = read_cvxvis(src)
    sale, use, linker = read_ndc_rows(src)
    ndc = build_ndc(sale, use, linker, mvx, notes)

    if args.nist_vs:
        merge_nist(read_nist(args.nist_vs), cvx, mvx, ndc, vis, vis_vaccines, notes)
    if args.covid_md:
        merge_covid_md(args.covid_md, ndc, vis, mvx, notes)

    # Consistency checks (reported, not fatal).
    for e in ndc.values():
        if e.cvx and e.cvx not in cvx:
            notes.append(f"NDC {e.ndc}: CVX {e.cvx} is not in the CVX table")
        if e.mvx and e.mvx not in mvx:
            notes.append(f"NDC {e.ndc}: MVX {e.mvx} is not in the MVX table")
    for c in sorted(vis_vaccines, key=cvx_sort_num):
        if c not in cvx:
            notes.append(f"VIS vaccine CVX {c} is not in the CVX table")

    for name, keys in (("CVX", list(cvx)), ("MVX", list(mvx)), ("NDC", list(ndc)), ("VIS", list(vis))):
        check_sorted(name, sorted(keys, key=byte_key))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(label, cvx, mvx, ndc, vis, vis_vaccines), encoding="utf-8")

    kinds = collections.Counter(e.kind for e in ndc.values())
    summary = (f"CVX {len(cvx)}, MVX {len(mvx)}, NDC {len(ndc)} (sale {kinds['UnitOfSale']}, "
               f"use {kinds['UnitOfUse']}), VIS {len(vis)}, VIS_VACCINES {len(vis_vaccines)}")
    notes = list(dict.fromkeys(notes))  # drop repeats, keep order
    for n in notes:
        warn(n)
    warn(summary)
    if args.notes:
        args.notes.write_text("\n".join(notes + [summary]) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
