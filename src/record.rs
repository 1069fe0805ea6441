//! The canonical vaccination record: the one shape every intake path produces.
//!
//! `izrelay import` reads it from JSON / NDJSON and the Dataverse mapping builds it from Web API
//! rows (see `design.md`, "The canonical vaccination record"). Unknown fields are an error, so a
//! typo in a feed never silently drops data. Dates and codes stay text here on purpose: a bad
//! value is not a JSON error but a validation finding that names the record and the field
//! (`hl7::validate_record`), so the record is kept, marked invalid, and can be fixed.

use serde::{Deserialize, Serialize};

/// One vaccination event (or refusal) for one patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The source system's id of the vaccination; becomes ORC-3 (filler order number).
    pub vaccination_id: String,
    /// True when the vaccination is complete and should be reported.
    #[serde(default)]
    pub completed: bool,
    /// True when staff asked for the message to be generated (again).
    #[serde(default)]
    pub generate_hl7: bool,
    /// When the source record last changed (RFC 3339).
    #[serde(default)]
    pub modified_on: Option<String>,
    /// The provider's IIS account number; picks the IIS and its credentials.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// The patient.
    #[serde(default)]
    pub patient: Patient,
    /// Parent or guardian; sent as NK1.
    #[serde(default)]
    pub responsible_party: Option<ResponsibleParty>,
    /// Where the dose was given (RXA-11, ORC-17).
    #[serde(default)]
    pub facility: Option<Facility>,
    /// Who gave the dose (RXA-10).
    #[serde(default)]
    pub vaccinator: Option<Clinician>,
    /// Who ordered the dose (ORC-12).
    #[serde(default)]
    pub ordering_provider: Option<Clinician>,
    /// The product given.
    #[serde(default)]
    pub vaccine: Vaccine,
    /// When the dose was given (RFC 3339 or `YYYY-MM-DD`); RXA-3 carries the date only.
    #[serde(default)]
    pub administered_at: Option<String>,
    /// Route of administration, NCIT code (e.g. `C28161` intramuscular).
    #[serde(default)]
    pub route: Option<String>,
    /// Body site, HL7 table 0163 (e.g. `LD` left deltoid).
    #[serde(default)]
    pub site: Option<String>,
    /// Dose number in the series, when known (OBX 30973-2).
    #[serde(default)]
    pub dose_number: Option<u32>,
    /// VFC / funding-program eligibility for this dose, HL7 table 0064 (`V01`…) or a local code.
    #[serde(default)]
    pub vfc_eligibility: Option<String>,
    /// Who paid for the vaccine: `PHC70`, `VXC50`, `VXC51`, `VXC52`.
    #[serde(default)]
    pub funding_source: Option<String>,
    /// The Vaccine Information Statements (or EUA fact sheets) given.
    #[serde(default)]
    pub vis: Vec<Vis>,
    /// Refusal reason, NIP002 (`00` parental decision … `03` patient decision); makes this a refusal.
    #[serde(default)]
    pub refusal_reason: Option<String>,
    /// True for a historical dose given elsewhere (RXA-9 `01` unless `information_source` says more).
    #[serde(default)]
    pub historical: bool,
    /// NIP001 source of a historical record (`01`…`08`); defaults to `01` for historical doses.
    #[serde(default)]
    pub information_source: Option<String>,
    /// RXA-21 action: `A` add (default), `U` update, `D` delete.
    #[serde(default)]
    pub action: Option<String>,
}

/// The patient (PID, PD1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patient {
    /// Medical record number (PID-3, identifier type MR).
    #[serde(default)]
    pub id: String,
    /// Assigning authority of the MRN; the message profile's default when absent.
    #[serde(default)]
    pub id_authority: Option<String>,
    /// Legal family name.
    #[serde(default)]
    pub family_name: String,
    /// Legal given name.
    #[serde(default)]
    pub given_name: String,
    /// Middle name or initial.
    #[serde(default)]
    pub middle_name: Option<String>,
    /// Name suffix (Jr., III).
    #[serde(default)]
    pub suffix: Option<String>,
    /// Mother's maiden (family) name, PID-6.
    #[serde(default)]
    pub mother_maiden_name: Option<String>,
    /// Birth date `YYYY-MM-DD`.
    #[serde(default)]
    pub birth_date: String,
    /// Administrative sex: `F`, `M` or `U`.
    #[serde(default)]
    pub sex: String,
    /// CDCREC race codes (e.g. `2106-3`).
    #[serde(default)]
    pub race: Vec<String>,
    /// CDCREC ethnicity code (`2135-2` or `2186-5`).
    #[serde(default)]
    pub ethnicity: Option<String>,
    /// Home address.
    #[serde(default)]
    pub address: Option<Address>,
    /// Home phone, US 10 digits (punctuation allowed).
    #[serde(default)]
    pub phone: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Primary language, ISO 639-2 (e.g. `eng`, `spa`).
    #[serde(default)]
    pub language: Option<String>,
    /// Publicity code, HL7 table 0215 (`01` no reminder/recall, `02` any method …).
    #[serde(default)]
    pub publicity: Option<String>,
    /// Protection indicator `Y` / `N` (Y: the IIS must not share the record).
    #[serde(default)]
    pub protection: Option<String>,
    /// Immunization registry status, HL7 table 0441 (`A` active …).
    #[serde(default)]
    pub registry_status: Option<String>,
    /// Effective date of the publicity code; the administration date when absent.
    #[serde(default)]
    pub publicity_date: Option<String>,
    /// Effective date of the protection indicator; the administration date when absent.
    #[serde(default)]
    pub protection_date: Option<String>,
    /// Effective date of the registry status; the administration date when absent.
    #[serde(default)]
    pub registry_status_date: Option<String>,
}

/// A postal address (XAD).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Street and number.
    #[serde(default)]
    pub street: Option<String>,
    /// Apartment, suite.
    #[serde(default)]
    pub other: Option<String>,
    /// City.
    #[serde(default)]
    pub city: Option<String>,
    /// State, two-letter postal code.
    #[serde(default)]
    pub state: Option<String>,
    /// ZIP code, 5 or 9 digits.
    #[serde(default)]
    pub zip: Option<String>,
    /// Country, ISO 3166 alpha-3 (`USA`).
    #[serde(default)]
    pub country: Option<String>,
    /// County FIPS code.
    #[serde(default)]
    pub county: Option<String>,
}

/// The parent, guardian or other responsible person (NK1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsibleParty {
    /// Family name.
    #[serde(default)]
    pub family_name: String,
    /// Given name.
    #[serde(default)]
    pub given_name: String,
    /// Middle name.
    #[serde(default)]
    pub middle_name: Option<String>,
    /// Relationship to the patient, HL7 table 0063 (`MTH`, `FTH`, `GRD` …).
    #[serde(default)]
    pub relationship: String,
    /// Address, when different from the patient's.
    #[serde(default)]
    pub address: Option<Address>,
    /// Phone, US 10 digits.
    #[serde(default)]
    pub phone: Option<String>,
}

/// The clinic or site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facility {
    /// The facility id the IIS knows (RXA-11.4, ORC-17.1).
    #[serde(default)]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A vaccinator or ordering provider (XCN).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clinician {
    /// Identifier, usually the NPI.
    #[serde(default)]
    pub id: Option<String>,
    /// Family name.
    #[serde(default)]
    pub family_name: Option<String>,
    /// Given name.
    #[serde(default)]
    pub given_name: Option<String>,
    /// Professional suffix / credential (`RN`, `MD`).
    #[serde(default)]
    pub credential: Option<String>,
}

/// The vaccine product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vaccine {
    /// CVX code (required).
    #[serde(default)]
    pub cvx: String,
    /// NDC (unit of sale or unit of use), 11-digit 5-4-2 with dashes, when known.
    #[serde(default)]
    pub ndc: Option<String>,
    /// Manufacturer, MVX code.
    #[serde(default)]
    pub mvx: Option<String>,
    /// Lot number.
    #[serde(default)]
    pub lot: Option<String>,
    /// Expiration date `YYYY-MM-DD` (or `YYYY-MM`).
    #[serde(default)]
    pub expiration_date: Option<String>,
    /// Dose volume in mL.
    #[serde(default)]
    pub dose_ml: Option<f64>,
}

/// One VIS (or EUA fact sheet) given to the patient.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vis {
    /// The 24-digit fully encoded VIS barcode string (GDTI), preferred.
    #[serde(default)]
    pub document: Option<String>,
    /// CVX code of the vaccine type (the older method, when no barcode is known).
    #[serde(default)]
    pub vaccine_type: Option<String>,
    /// Edition (publication) date `YYYY-MM-DD`.
    #[serde(default)]
    pub published: Option<String>,
    /// Date given to the patient `YYYY-MM-DD`.
    #[serde(default)]
    pub presented: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7 (fuzzing, `fuzz/fuzz_targets/record_vxu.rs` and `dataverse_page.rs`): serde_json's
    /// default float parser is not correctly rounded, so a `dose_ml` could read back from the
    /// record's own canonical JSON one bit off (`2222…220.3` → `…225e33`, then `…222e33`).
    #[test]
    fn i7_a_record_reads_back_from_its_own_json() -> serde_json::Result<()> {
        for dose in
            ["2222222222222222222222222222222220.3", "0.0000000018446744073709551616", "0.3"]
        {
            let text = format!(r#"{{"vaccination_id": "v1", "vaccine": {{"dose_ml": {dose}}}}}"#);
            let rec: Record = serde_json::from_str(&text)?;
            assert_eq!(rec.vaccine.dose_ml, dose.parse::<f64>().ok(), "dose_ml {dose}");
            let again: Record = serde_json::from_str(&serde_json::to_string(&rec)?)?;
            assert_eq!(again, rec, "dose_ml {dose}");
        }
        Ok(())
    }
}
