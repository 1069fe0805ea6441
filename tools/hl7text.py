"""HL7 text as the VXU writer sends it, shared by the table generators (gen_cdc_tables.py,
gen_profile_tables.py), which store coded values pre-escaped and pre-joined."""

# HL7 escaping under the CDC delimiters, as src/hl7/escape.rs writes it: the five delimiters
# become \F\ \S\ \T\ \R\ \E\, CR and LF the hex escapes \X0D\ and \X0A\.
HL7_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\\": "\\E\\",
               "\r": "\\X0D\\", "\n": "\\X0A\\"}


def hl7_coded(code: str, text: str, system: str) -> str:
    """A CE/CWE triplet `code^text^system` escaped and joined as the VXU writer sends it (one copy
    per message instead of three escaped values); "" when code or system is empty (the writer
    then escapes the parts itself, trimming as it goes)."""
    if not code or not system:
        return ""
    return "^".join("".join(HL7_ESCAPES.get(ch, ch) for ch in part) for part in (code, text, system))
