#!/usr/bin/env python3
"""Writes src/demo/samples.json, the records `izrelay demo` seeds its simulated Dataverse with.

Deterministic (no clock, no randomness): the same script writes the same file. The record ids
are GUIDs, as Dataverse primary keys are; new ones are uuid5 of a fixed name, the six older
ones keep the ids the demo and its tests already knew.

Every code is checked here against the crate's own tables before the file is written:
CVX, MVX, NDC (and that the NDC is that CVX made by that MVX), VIS barcodes (current
editions only) and the NIST value sets (sites, eligibility, funding, race, ...). The Rust
unit tests in src/demo/mod.rs then check what matters in the end: every record but the one
invalid on purpose becomes a VXU with no validator error.

    python3 tools/gen_demo_samples.py          # rewrite src/demo/samples.json
    python3 tools/gen_demo_samples.py --check  # exit 1 if the file is not what this writes
"""

import json
import re
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src/demo/samples.json"
CODES = ROOT / "src/hl7/codes/tables.rs"
NIST = ROOT / "src/hl7/nist/tables.rs"

# The ids src/demo/mod.rs names.
SHOWN = "0f8fad5b-d9cb-469f-a165-70867728950e"
INVALID = "deadbeef-0000-4000-8000-000000000001"
NAMESPACE = uuid.UUID("6f1c1b4e-4a55-4b53-9e0e-1d2c3b4a5f60")

# --- who gives the doses --------------------------------------------------------------------

ELM = {"id": "FAC-17", "name": "Elm Street Clinic"}
HARBOR = {"id": "FAC-22", "name": "Harbor & Main Pharmacy"}
RAINIER = {"id": "FAC-31", "name": "Rainier Valley Pediatrics"}
LEE = {"id": "1234567893", "family_name": "Lee", "given_name": "Ana", "credential": "RN"}
KIM = {"id": "1987654328", "family_name": "Kim", "given_name": "Joe", "credential": "MD"}
OKAFOR = {"id": "RPH-77", "family_name": "Okafor", "given_name": "Chi", "credential": "PharmD"}
NAKAMURA = {"id": "1467556985", "family_name": "Nakamura", "given_name": "Emi", "credential": "RN"}
PATEL = {"id": "1578902219", "family_name": "Patel", "given_name": "Ravi", "credential": "MD"}

# Provider (IIS account) → its facility, vaccinator and ordering provider.
PROVIDERS = {
    "PRV-001": (ELM, LEE, KIM),
    "PRV-002": (HARBOR, OKAFOR, None),
    "PRV-003": (RAINIER, NAKAMURA, PATEL),
}

# --- products: CVX, NDC (unit of use), MVX, mL, route, VIS ----------------------------------
# VIS: a barcode (GDTI) of a current edition, or ("type", published) for the vaccine-type
# method where no barcode fits the product (COVID-19 for under 12, Novavax).

COVID_MRNA_VIS = "253088698300063911250131"
FLU_VIS = "253088698300010311250131"
FLU_LIVE_VIS = "253088698300009711250131"
MULTI_PEDS_VIS = "253088698300026411230724"

IM, SC, ORAL, NASAL = "C28161", "C38299", "C38288", "C38284"

PRODUCTS = {
    # COVID-19, 2025-2026 formulas
    "comirnaty": ("309", "00069-2528-01", "PFR", 0.3, IM, [COVID_MRNA_VIS]),
    "comirnaty-5-11": ("310", "00069-2501-01", "PFR", 0.3, IM, [("310", "2025-01-31")]),
    "spikevax": ("312", "80777-0110-01", "MOD", 0.5, IM, [COVID_MRNA_VIS]),
    "spikevax-child": ("311", "80777-0113-09", "MOD", 0.25, IM, [("311", "2025-01-31")]),
    "mnexspike": ("334", "80777-0400-17", "MOD", 0.2, IM, [COVID_MRNA_VIS]),
    "nuvaxovid": ("313", "80631-0207-01", "NVX", 0.5, IM, [("313", "2025-01-31")]),
    # influenza, trivalent (2025-2026 on)
    "fluzone": ("140", "49281-0425-88", "PMC", 0.5, IM, [FLU_VIS]),
    "fluzone-hd": ("135", "49281-0125-88", "PMC", 0.5, IM, [FLU_VIS]),
    "fluad": ("168", "70461-0025-04", "SEQ", 0.5, IM, [FLU_VIS]),
    "flublok": ("155", "49281-0725-88", "PMC", 0.5, IM, [FLU_VIS]),
    "flucelvax": ("153", "70461-0655-04", "SEQ", 0.5, IM, [FLU_VIS]),
    "flumist": ("111", "66019-0311-00", "MED", 0.2, NASAL, [FLU_LIVE_VIS]),
    # infants and children
    "engerix-b-ped": ("08", "58160-0820-01", "SKB", 0.5, IM, ["253088698300005911250131"]),
    "beyfortus-50": ("306", "49281-0575-00", "PMC", 0.5, IM, ["253088698300062211230925"]),
    "vaxelis": ("146", "63361-0243-58", "MSP", 0.5, IM, [MULTI_PEDS_VIS]),
    "prevnar20": ("216", "00005-2000-01", "PFR", 0.5, IM, [MULTI_PEDS_VIS]),
    "rotarix": ("119", "58160-0851-01", "SKB", 1.0, ORAL, ["253088698300019611211015"]),
    "mmr": ("03", "00006-4681-01", "MSD", 0.5, SC, ["253088698300012711250131"]),
    "varivax": ("21", "00006-4827-01", "MSD", 0.5, SC, ["253088698300024011250131"]),
    "havrix-ped": ("83", "58160-0825-01", "SKB", 0.5, IM, ["253088698300004211250131"]),
    "kinrix": ("130", "58160-0812-01", "SKB", 0.5, IM,
               ["253088698300003511210806", "253088698300017211250131"]),
    "proquad": ("94", "00006-4171-01", "MSD", 0.5, SC, ["253088698300013411250131"]),
    # adolescents and adults
    "gardasil9": ("165", "00006-4119-01", "MSD", 0.5, IM, ["253088698300029511210806"]),
    "menquadfi": ("203", "49281-0590-58", "PMC", 0.5, IM, ["253088698300014111250131"]),
    "boostrix": ("115", "58160-0842-01", "SKB", 0.5, IM, ["253088698300027111250131"]),
    "adacel": ("115", "49281-0400-58", "PMC", 0.5, IM, ["253088698300027111250131"]),
    "abrysvo": ("305", "00069-0207-01", "PFR", 0.5, IM, ["253088698300060811250131"]),
    "arexvy": ("303", "58160-0723-03", "SKB", 0.5, IM, ["253088698300060811250131"]),
    "shingrix": ("187", "58160-0828-01", "SKB", 0.5, IM, ["253088698300032511220204"]),
    "heplisav-b": ("189", "43528-0002-01", "DVX", 0.5, IM, ["253088698300005911250131"]),
    "capvaxive": ("327", "00006-4347-99", "MSD", 0.5, IM, [MULTI_PEDS_VIS]),
}

# --- patients --------------------------------------------------------------------------------


def addr(street, city, zip_, county=None, other=None):
    a = {"street": street}
    if other:
        a["other"] = other
    a.update({"city": city, "state": "WA", "zip": zip_, "country": "USA"})
    if county:
        a["county"] = county
    return a


PATIENTS = {
    "obrien": {"id": "MRN-48213", "id_authority": "CLINIC-A", "family_name": "O'Brien",
               "given_name": "Mary", "birth_date": "1980-02-29", "sex": "F"},
    "nguyen": {"id": "MRN-50117", "family_name": "Nguyen", "given_name": "Bao",
               "birth_date": "2022-06-15", "sex": "M", "race": ["2028-9"],
               "ethnicity": "2186-5", "phone": "(206) 555-0199", "language": "vie",
               "address": addr("400 Pine St", "Seattle", "98101-2233")},
    "garcia": {"id": "MRN-61002", "family_name": "Garcia", "given_name": "Luis",
               "birth_date": "1957-09-03", "sex": "M", "ethnicity": "2135-2"},
    "delims": {"id": "MRN-70331", "family_name": "Smith|Jones^&~\\", "given_name": "Pat",
               "birth_date": "1999-12-31", "sex": "U", "race": ["2054-5", "2131-1"]},
    "haddad": {"id": "MRN-80001", "family_name": "Haddad", "given_name": "Noor",
               "birth_date": "2026-11-19", "sex": "F", "race": ["2131-1"], "ethnicity": "2186-5",
               "mother_maiden_name": "Saleh", "address": addr("9 Bay Rd", "Tacoma", "98402"),
               "publicity": "01", "registry_status": "A"},
    "okoro": {"id": "MRN-80077", "family_name": "Okoro", "given_name": "Ada",
              "birth_date": "2026-09-20", "sex": "F", "race": ["2054-5"], "ethnicity": "2186-5",
              "mother_maiden_name": "Eze", "phone": "253-555-0187",
              "address": addr("1802 S Yakima Ave", "Tacoma", "98405", other="Unit B")},
    "wells": {"id": "MRN-55120", "family_name": "Wells", "given_name": "Lacy",
              "birth_date": "2022-04-30", "sex": "F", "race": ["2106-3"], "ethnicity": "2186-5"},
    "begay": {"id": "MRN-70123", "family_name": "Begay", "given_name": "Tso",
              "birth_date": "2012-04-02", "sex": "M", "race": ["1002-5", "2106-3"],
              "ethnicity": "2186-5", "email": "tso.family@example.org", "phone": "5055550110",
              "language": "eng", "publicity": "02", "protection": "Y", "registry_status": "A",
              "publicity_date": "2020-01-15"},
    "kowalski": {"id": "MRN-66001", "family_name": "Kowalski", "given_name": "Zofia",
                 "birth_date": "2021-01-10", "sex": "F", "race": ["2106-3"]},
    "reyes": {"id": "MRN-90210", "family_name": "Reyes", "given_name": "Ana",
              "birth_date": "2018-08-08", "sex": "F", "ethnicity": "2135-2", "language": "spa"},
    "abernathy": {"id": "MRN-57340", "family_name": "Abernathy", "given_name": "Liam",
                  "birth_date": "2019-03-17", "sex": "M", "race": ["2106-3"],
                  "ethnicity": "2186-5"},
    "jackson": {"id": "MRN-12345", "family_name": "Jackson", "given_name": "Lily",
                "birth_date": "1990-07-04", "sex": "F", "phone": "+1 (406) 555-4019"},
    "tanaka": {"id": "MRN-34001", "family_name": "Tanaka", "given_name": "Hiro",
               "birth_date": "1949-03-03", "sex": "M", "race": ["2028-9"],
               "address": addr("77 Rainier Ave S", "Seattle", "98144", county="53033")},
    "dsouza": {"id": "HMP-20418", "family_name": "D'Souza", "given_name": "Priya",
               "birth_date": "1986-05-12", "sex": "F", "race": ["2028-9"], "ethnicity": "2186-5",
               "phone": "253.555.0133"},
    "ndiaye": {"id": "HMP-20533", "family_name": "N'Diaye", "given_name": "Moussa",
               "birth_date": "1971-10-30", "sex": "M", "race": ["2054-5"], "language": "fre"},
    "petrov": {"id": "HMP-20602", "family_name": "Petrov", "given_name": "Anya",
               "middle_name": "S.", "birth_date": "1958-02-14", "sex": "F", "race": ["2106-3"],
               "address": addr("3120 N Proctor St", "Tacoma", "98407", county="53053")},
    "ortiz": {"id": "HMP-20777", "family_name": "Williams-Ortiz", "given_name": "José",
              "birth_date": "1995-01-20", "sex": "M", "ethnicity": "2135-2", "language": "spa"},
    "li": {"id": "HMP-20811", "family_name": "Li", "given_name": "Wei",
           "birth_date": "2001-09-09", "sex": "F", "race": ["2028-9"]},
    "johansson": {"id": "HMP-20940", "family_name": "Johansson", "given_name": "Erik",
                  "birth_date": "1948-06-30", "sex": "M", "race": ["2106-3"],
                  "ethnicity": "2186-5", "phone": "2535550166"},
    "brown": {"id": "HMP-21007", "family_name": "Brown", "given_name": "Keisha",
              "birth_date": "1983-11-02", "sex": "F", "race": ["2054-5"], "ethnicity": "2186-5"},
    "alvarez": {"id": "MRN-63318", "family_name": "Álvarez", "given_name": "Tomás",
                "birth_date": "1964-08-21", "sex": "M", "ethnicity": "2135-2",
                "language": "spa"},
    "keawe": {"id": "MRN-63401", "family_name": "Keawe", "given_name": "Malia",
              "birth_date": "2008-12-05", "sex": "F", "race": ["2076-8"], "ethnicity": "2186-5"},
}

MOTHER_NGUYEN = {"family_name": "Nguyen", "given_name": "Linh", "relationship": "MTH",
                 "phone": "2065550199"}
MOTHER_HADDAD = {"family_name": "Haddad", "given_name": "Rania", "relationship": "MTH",
                 "phone": "253-555-0142", "address": addr("9 Bay Rd", "Tacoma", "98402")}
# Both parents typed into one field, as front desks do.
MOTHER_OKORO = {"family_name": "Okoro", "given_name": "Chiamaka & Obinna", "relationship": "MTH",
                "phone": "253-555-0187"}
GUARDIAN_BEGAY = {"family_name": "Begay", "given_name": "Ella", "relationship": "GRD"}
FATHER_ABERNATHY = {"family_name": "Abernathy", "given_name": "Sean", "relationship": "FTH",
                    "phone": "(206) 555-0172"}

# --- the records -------------------------------------------------------------------------------
# (key, provider, patient, product, date, lot, expiration, site, eligibility, funding, extra)

RECORDS = []


def dose(key, provider, patient, product, date, lot, exp, site, elig, funding, **extra):
    RECORDS.append((key, provider, patient, product, date, lot, exp, site, elig, funding, extra))


# Elm Street Clinic: a family practice (adults and children).
dose("covid-obrien", "PRV-001", "obrien", "comirnaty", "2026-11-20T14:30:00-08:00", "LX9261",
     "2027-03-31", "LD", "V01", "PHC70", dose_number=1)
dose("flu-nguyen", "PRV-001", "nguyen", "fluzone", "2026-11-21", "UT8211AA", "2027-06-30",
     "RD", "V02", "VXC51", responsible_party=MOTHER_NGUYEN)
dose("covid-nguyen", "PRV-001", "nguyen", "spikevax-child", "2026-11-21", "3046154",
     "2027-02-28", "LD", "V02", "VXC51", responsible_party=MOTHER_NGUYEN)
dose("flu-obrien", "PRV-001", "obrien", "flublok", "2026-11-20T14:35:00-08:00", "UA1873AB",
     "2027-06-30", "RD", "V01", "PHC70")
dose("flu-garcia", "PRV-001", "garcia", "fluad", "2026-11-21", "AU2411B", "2027-06-30", "LD",
     "V01", "PHC70")
dose("tdap-jackson", "PRV-001", "jackson", "adacel", "2026-11-16", "U7025AA", "2028-01-31", "LD",
     "V01", "PHC70")
dose("rsv-jackson", "PRV-001", "jackson", "abrysvo", "2026-11-16", "LF1947", "2027-08-31", "RD",
     "V01", "PHC70")
dose("covid-tanaka", "PRV-001", "tanaka", "mnexspike", "2026-11-22", "AB1234", "2027-04-30",
     "LD", "V01", "PHC70")
dose("flu-tanaka", "PRV-001", "tanaka", "fluzone-hd", "2026-11-22", "UJ9102AA", "2027-06-30",
     "RD", "V01", "PHC70")
dose("covid-alvarez", "PRV-001", "alvarez", "spikevax", "2026-11-19", "3046788", "2027-05-31",
     "LD", "V23", "VXC52")
dose("flu-alvarez", "PRV-001", "alvarez", "flucelvax", "2026-11-19", "AU2398C", "2027-06-30",
     "RD", "V23", "VXC52")
dose("hpv-keawe", "PRV-001", "keawe", "gardasil9", "2026-11-17", "Y015433", "2028-02-29", "LD",
     "V02", "VXC51", dose_number=2)
dose("covid-keawe", "PRV-001", "keawe", "comirnaty", "2026-11-17", "MF7342", "2027-03-31", "RD",
     "V02", "VXC51")

# Harbor & Main Pharmacy: adults, COVID-19 and flu season.
dose("covid-delims", "PRV-002", "delims", "nuvaxovid", "2026-11-22T09:05:00-05:00", "NVX-4471",
     "2027-01", "RD", "V01", "PHC70")
dose("flu-delims", "PRV-002", "delims", "flucelvax", "2026-11-22T09:07:00-05:00", "AU2398C",
     "2027-06-30", "LD", "V01", "PHC70")
dose("covid-dsouza", "PRV-002", "dsouza", "comirnaty", "2026-11-18", "MF7342", "2027-03-31",
     "LD", "V01", "PHC70")
dose("flu-dsouza", "PRV-002", "dsouza", "fluzone", "2026-11-18", "UT8211AA", "2027-06-30", "RD",
     "V01", "PHC70")
dose("covid-ndiaye", "PRV-002", "ndiaye", "spikevax", "2026-11-18", "3046788", "2027-05-31", "LD",
     "V01", "PHC70")
dose("zoster-ndiaye", "PRV-002", "ndiaye", "shingrix", "2026-11-18", "7ZX2B", "2028-06-30", "RD",
     "V01", "PHC70", dose_number=1)
dose("rsv-petrov", "PRV-002", "petrov", "arexvy", "2026-11-19", "YH3F7", "2027-10-31", "LD",
     "V01", "PHC70")
dose("flu-petrov", "PRV-002", "petrov", "fluad", "2026-11-19", "AU2411B", "2027-06-30", "RD",
     "V01", "PHC70")
dose("covid-ortiz", "PRV-002", "ortiz", "nuvaxovid", "2026-11-20", "NVX-4502", "2027-01", "LD",
     "V01", "PHC70")
dose("covid-li", "PRV-002", "li", "comirnaty", "2026-11-21", "MF7342", "2027-03-31", "LD", "V01",
     "PHC70")
dose("covid-johansson", "PRV-002", "johansson", "mnexspike", "2026-11-20", "AB1277",
     "2027-04-30", "LD", "V01", "PHC70")
dose("flu-johansson", "PRV-002", "johansson", "fluzone-hd", "2026-11-20", "UJ9102AA",
     "2027-06-30", "RD", "V01", "PHC70")
dose("pcv-johansson", "PRV-002", "johansson", "capvaxive", "2026-11-20", "Y019245", "2028-03-31",
     "RD", "V01", "PHC70")
dose("hepb-brown", "PRV-002", "brown", "heplisav-b", "2026-11-21", "HB0392", "2027-11-30", "LD",
     "V01", "PHC70", dose_number=2)

# Rainier Valley Pediatrics: infants, children, adolescents.
dose("hepb-haddad", "PRV-003", "haddad", "engerix-b-ped", "2026-11-20", "Y5LF9", "2027-09-30",
     "RVL", "V02", "VXC51", dose_number=1, responsible_party=MOTHER_HADDAD)
dose("rsvmab-haddad", "PRV-003", "haddad", "beyfortus-50", "2026-11-20", "3U591A", "2027-07-31",
     "LVL", "V02", "VXC51", responsible_party=MOTHER_HADDAD)
dose("dtap-okoro", "PRV-003", "okoro", "vaxelis", "2026-11-20", "W7431", "2028-04-30", "RVL",
     "V03", "VXC51", dose_number=1, responsible_party=MOTHER_OKORO)
dose("pcv-okoro", "PRV-003", "okoro", "prevnar20", "2026-11-20", "LL8204", "2028-01-31", "LVL",
     "V03", "VXC51", dose_number=1, responsible_party=MOTHER_OKORO)
dose("rota-okoro", "PRV-003", "okoro", "rotarix", "2026-11-20", "AROLC123", "2027-03-31", None,
     "V03", "VXC51", dose_number=1, responsible_party=MOTHER_OKORO)
dose("dtapipv-wells", "PRV-003", "wells", "kinrix", "2026-11-19", "C5566AA", "2027-05-31", "LD",
     "V01", "PHC70", dose_number=5)
dose("mmrv-wells", "PRV-003", "wells", "proquad", "2026-11-19", "Y009871", "2027-12-31", "RA",
     "V01", "PHC70", dose_number=2)
dose("flu-wells", "PRV-003", "wells", "flucelvax", "2026-11-19", "AU2398C", "2027-06-30", "RD",
     "V01", "PHC70")
dose("hpv-begay", "PRV-003", "begay", "gardasil9", "2026-11-18T10:00:00-07:00", "W0123456",
     "2027-12-31", "LD", "V04", "VXC51", dose_number=2, responsible_party=GUARDIAN_BEGAY)
dose("mena-begay", "PRV-003", "begay", "menquadfi", "2026-11-18T10:02:00-07:00", "U8142AA",
     "2028-05-31", "RD", "V04", "VXC51", dose_number=1, responsible_party=GUARDIAN_BEGAY)
dose("tdap-begay", "PRV-003", "begay", "boostrix", "2026-11-18T10:04:00-07:00", "3J7K2",
     "2028-02-29", "LA", "V04", "VXC51", responsible_party=GUARDIAN_BEGAY)
dose("covid-kowalski", "PRV-003", "kowalski", "spikevax-child", "2026-11-17", "3045789",
     "2027-02-28", "RD", "V01", "VXC50", dose_number=1)
dose("flu-kowalski", "PRV-003", "kowalski", "flumist", "2026-11-17", "LA2417", "2027-01-15",
     None, "V01", "PHC70")
dose("flu-reyes", "PRV-003", "reyes", "flumist", "2026-11-20", "LA2417", "2027-01-15", None,
     "V02", "VXC51")
dose("covid-reyes", "PRV-003", "reyes", "comirnaty-5-11", "2026-11-20", "MG1184", "2027-04-30",
     "LD", "V02", "VXC51")
dose("hepa-abernathy", "PRV-003", "abernathy", "havrix-ped", "2026-11-21", "AHAVB981",
     "2028-01-31", "LD", "V03", "VXC51", dose_number=2, responsible_party=FATHER_ABERNATHY)
dose("var-abernathy", "PRV-003", "abernathy", "varivax", "2026-11-21", "Y011102", "2027-10-31",
     "RA", "V03", "VXC51", dose_number=2, responsible_party=FATHER_ABERNATHY)

# Not administered here: refusals (RXA-20 RE) and historical doses (RXA-9 01-08).
REFUSALS = [
    ("refusal-garcia", "PRV-001", "garcia", "312", "MOD", "2026-11-21", "03"),
    ("refusal-abernathy", "PRV-003", "abernathy", "153", "SEQ", "2026-11-21", "00"),
]
HISTORICAL = [
    ("historical-obrien", "PRV-001", "obrien", "08", None, "1980-03-01", "02"),
    ("historical-tanaka", "PRV-001", "tanaka", "207", ("80777-0273-99", "MOD", "025L20A"),
     "2021-01-28", "05"),
    ("historical-begay", "PRV-003", "begay", "03", None, "2013-04-10", "03"),
]

# The ids the demo already used for these records.
FIXED_IDS = {
    "covid-obrien": SHOWN,
    "flu-nguyen": "5b1e6c2a-3f0d-4a8e-9c41-2d7f8e6a1b90",
    "refusal-garcia": "a71c0e55-9b2d-4f61-8e3a-6c5d4b3a2f10",
    "historical-obrien": "c3d2e1f0-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
    "covid-delims": "9e8d7c6b-5a49-4382-a716-151413121110",
}

# The one record that cannot be sent: every field a clinic can get wrong, at once.
INVALID_RECORD = {
    "vaccination_id": INVALID, "completed": True, "provider_id": "PRV-001",
    "patient": {"id": "MRN-99999", "family_name": "Doe", "given_name": "",
                "birth_date": "2030-01-01", "sex": "X"},
    "vaccine": {"cvx": "999", "ndc": "59267-1000-02", "mvx": "ZZZ"},
    "administered_at": "2026-11-21", "route": "IM", "vfc_eligibility": "V99",
}


def record_id(key):
    return FIXED_IDS.get(key) or str(uuid.uuid5(NAMESPACE, f"izrelay-demo/{key}"))


def base(key, provider, patient):
    facility, _, _ = PROVIDERS[provider]
    rec = {"vaccination_id": record_id(key), "completed": True, "provider_id": provider,
           "patient": dict(PATIENTS[patient]), "facility": facility}
    if key == "covid-obrien":
        # The demo's first record carries every optional patient field.
        rec["modified_on"] = "2026-11-20T22:31:04Z"
        rec["patient"].update({
            "middle_name": "Ann", "mother_maiden_name": "Smith", "race": ["2106-3"],
            "ethnicity": "2186-5",
            "address": addr("12 Elm St", "Seattle", "98101", county="53033", other="Apt 4"),
            "phone": "2065551234", "language": "eng", "publicity": "02", "protection": "N",
            "registry_status": "A"})
    return rec


def build():
    out = []
    for key, provider, patient, product, date, lot, exp, site, elig, funding, extra in RECORDS:
        cvx, ndc, mvx, ml, route, vis = PRODUCTS[product]
        _, vaccinator, orderer = PROVIDERS[provider]
        rec = base(key, provider, patient)
        if "responsible_party" in extra:
            rec["responsible_party"] = extra["responsible_party"]
        rec["vaccinator"] = vaccinator
        if orderer:
            rec["ordering_provider"] = orderer
        rec["vaccine"] = {"cvx": cvx, "ndc": ndc, "mvx": mvx, "lot": lot,
                          "expiration_date": exp, "dose_ml": ml}
        rec["administered_at"] = date
        rec["route"] = route
        if site:
            rec["site"] = site
        if "dose_number" in extra:
            rec["dose_number"] = extra["dose_number"]
        rec["vfc_eligibility"] = elig
        rec["funding_source"] = funding
        day = date[:10]
        rec["vis"] = [
            {"document": v, "presented": day} if isinstance(v, str)
            else {"vaccine_type": v[0], "published": v[1], "presented": day}
            for v in vis
        ]
        out.append(rec)
    for key, provider, patient, cvx, mvx, date, reason in REFUSALS:
        rec = base(key, provider, patient)
        rec["vaccine"] = {"cvx": cvx, "mvx": mvx}
        rec.update({"administered_at": date, "refusal_reason": reason})
        out.append(rec)
    for key, provider, patient, cvx, product, date, source in HISTORICAL:
        rec = base(key, provider, patient)
        rec["vaccine"] = {"cvx": cvx}
        if product:
            ndc, mvx, lot = product
            rec["vaccine"].update({"ndc": ndc, "mvx": mvx, "lot": lot})
        rec.update({"administered_at": date, "historical": True, "information_source": source})
        out.append(rec)
    out.append(INVALID_RECORD)
    # The demo's first records are the ones it prints in full.
    first = [SHOWN, FIXED_IDS["covid-delims"]]
    out.sort(key=lambda r: first.index(r["vaccination_id"]) if r["vaccination_id"] in first
             else len(first))
    return out


# --- checks against the crate's tables ----------------------------------------------------------


def tables():
    t = CODES.read_text()
    cvx = {c: s for c, _, s in re.findall(
        r'CvxEntry \{ code: "([^"]+)", short_description: "([^"]*)", status: CvxStatus::(\w+)', t)}
    mvx = set(re.findall(r'MvxEntry \{ code: "([^"]+)"', t))
    ndc = {n: (c, m) for n, c, m in re.findall(
        r'NdcEntry \{ ndc: "([^"]+)", kind: NdcKind::\w+, cvx: "([^"]*)", mvx: "([^"]*)"', t)}
    vis = {g: cur == "true" for g, cur in re.findall(
        r'VisEntry \{ gdti: "([^"]+)", [^}]*current: (\w+)', t)}
    i = t.index("VIS_VACCINES")
    vis_vaccines = set(re.findall(r'"([^"]+)"', t[i:]))
    n = NIST.read_text()
    sets = {}
    for name in ["HL70163_IZ", "HL70064_IZ", "PHVS_ImmunizationFundingSource_IIS", "HL70063_IZ",
                 "NIP001", "NIP002", "CDCREC_R_IZ", "CDCREC_E_IZ", "HL70215_IZ", "HL70441_IZ",
                 "HL70001_IZ"]:
        start = n.index(f'ValueSetDef {{ id: "{name}"')
        sets[name] = {c for c, _ in re.findall(r'\("([^"]*)", "([^"]*)"', n[start:n.index("] },", start)])}
    return cvx, mvx, ndc, vis, vis_vaccines, sets


def check(records):
    cvx, mvx, ndc, vis, vis_vaccines, sets = tables()
    problems = []

    def need(ok, what):
        if not ok:
            problems.append(what)

    patients = {}
    for r in records:
        rid = r["vaccination_id"]
        if rid == INVALID:
            continue
        p, v = r["patient"], r["vaccine"]
        need(len(p["id"]) <= 15, f"{rid}: patient id too long")
        need(p["sex"] in sets["HL70001_IZ"], f"{rid}: sex")
        for race in p.get("race", []):
            need(race in sets["CDCREC_R_IZ"], f"{rid}: race {race}")
        need(p.get("ethnicity", "2186-5") in sets["CDCREC_E_IZ"], f"{rid}: ethnicity")
        need(p.get("publicity", "01") in sets["HL70215_IZ"], f"{rid}: publicity")
        need(p.get("registry_status", "A") in sets["HL70441_IZ"], f"{rid}: registry status")
        rp = r.get("responsible_party")
        need(rp is None or rp["relationship"] in sets["HL70063_IZ"], f"{rid}: relationship")
        same = patients.setdefault(p["id"], (p["family_name"], p["birth_date"]))
        need(same == (p["family_name"], p["birth_date"]), f"{rid}: patient {p['id']} differs")
        need(v["cvx"] in cvx, f"{rid}: CVX {v['cvx']} unknown")
        need(r["administered_at"][:10] >= p["birth_date"], f"{rid}: given before birth")
        need(r["administered_at"][:10] <= "2026-11-22", f"{rid}: given after the demo's today")
        if "mvx" in v:
            need(v["mvx"] in mvx, f"{rid}: MVX {v['mvx']} unknown")
        if "ndc" in v:
            need(ndc.get(v["ndc"]) == (v["cvx"], v["mvx"]),
                 f"{rid}: NDC {v['ndc']} is {ndc.get(v['ndc'])}, not {v['cvx']}/{v['mvx']}")
        if r.get("historical"):
            need(r["information_source"] in sets["NIP001"] - {"00"}, f"{rid}: source")
            continue
        if "refusal_reason" in r:
            need(r["refusal_reason"] in sets["NIP002"], f"{rid}: refusal reason")
            continue
        need(cvx[v["cvx"]] == "Active", f"{rid}: CVX {v['cvx']} is not active")
        need(0 < v["dose_ml"] <= 10, f"{rid}: dose volume")
        need(r.get("site") is None or r["site"] in sets["HL70163_IZ"], f"{rid}: site")
        need(r["vfc_eligibility"] in sets["HL70064_IZ"], f"{rid}: eligibility")
        need(r["funding_source"] in sets["PHVS_ImmunizationFundingSource_IIS"], f"{rid}: funding")
        need(v["cvx"] not in vis_vaccines or r["vis"], f"{rid}: CVX {v['cvx']} needs a VIS")
        for doc in r["vis"]:
            if "document" in doc:
                need(vis.get(doc["document"]) is True, f"{rid}: VIS {doc['document']} not current")
            else:
                need(doc["vaccine_type"] in vis_vaccines, f"{rid}: VIS type {doc['vaccine_type']}")
    ids = [r["vaccination_id"] for r in records]
    need(len(ids) == len(set(ids)), "duplicate vaccination ids")
    return problems


# --- output ------------------------------------------------------------------------------------


def dump(records):
    """One record per block: its scalars on the first line, each object on a line of its own."""
    blocks = []
    for r in records:
        scalars = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                   for k, v in r.items() if not isinstance(v, (dict, list))]
        nested = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                  for k, v in r.items() if isinstance(v, (dict, list))]
        blocks.append("  {" + ", ".join(scalars) + ",\n   " + ",\n   ".join(nested) + "}")
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def main():
    records = build()
    problems = check(records)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    text = dump(records)
    json.loads(text)
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            print(f"{OUT} is not what {Path(__file__).name} writes; run it", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {len(records)} records to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
