//! Per-IIS message settings: what differs from state to state, as configuration.
//!
//! The seed solution made implementers edit code to fit a state's rules; here every such
//! choice (MSH-3/4/5/6/22/23 values, processing id, optional segments and OBX, where the NDC
//! goes, extra local codes) is a field of [`MessageProfile`], read from the config file per
//! provider / IIS, with defaults that produce a message conforming to CDC IG 1.5 Z22.

use serde::{Deserialize, Serialize};

/// A hierarchic designator (HD): a namespace id and/or an ISO OID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hd {
    /// Local namespace id, e.g. `MYEHR` (HD.1).
    #[serde(default)]
    pub namespace: String,
    /// ISO object identifier, e.g. `2.16.840.1.113883.3.72.5.40.8` (HD.2, with HD.3 `ISO`).
    #[serde(default)]
    pub oid: String,
}

impl Hd {
    /// An HD with only a namespace id.
    pub fn named(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned(), oid: String::new() }
    }

    /// True when neither part is set.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.oid.is_empty()
    }
}

/// MSH-11 processing id (HL7 table 0103).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessingId {
    /// Production.
    #[default]
    #[serde(rename = "P")]
    Production,
    /// Training (most IIS test environments).
    #[serde(rename = "T")]
    Training,
    /// Debugging.
    #[serde(rename = "D")]
    Debugging,
}

impl ProcessingId {
    /// The HL7 code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Production => "P",
            Self::Training => "T",
            Self::Debugging => "D",
        }
    }
}

/// Where the NDC goes in RXA-5 when the record has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NdcPlacement {
    /// CVX in RXA-5.1-3, NDC as the alternate code in RXA-5.4-6 (CDC's preference).
    #[default]
    Alternate,
    /// NDC in RXA-5.1-3, CVX as the alternate (as NIST's COVID-19 test messages do).
    Primary,
    /// CVX only.
    Omit,
}

/// How VIS documents are sent (IZ-24).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisMethod {
    /// The 24-digit barcode string (69764-9) and the presentation date (29769-7): preferred.
    /// A VIS without a document string falls back to the vaccine-type method.
    #[default]
    Barcode,
    /// Vaccine type (30956-7) + publication date (29768-9) + presentation date (29769-7).
    VaccineType,
}

/// A code the IIS accepts besides the national value set (e.g. a state eligibility code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalCode {
    /// The code, e.g. `AKA01`.
    pub code: String,
    /// Its display text.
    pub text: String,
    /// Its coding system, e.g. `AKA` or `L`.
    pub system: String,
}

/// Everything about the VXU that differs per IIS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageProfile {
    /// MSH-3 sending application.
    pub sending_application: Hd,
    /// MSH-4 sending facility, usually the IIS-assigned organization code; when empty the
    /// record's facility id is used.
    pub sending_facility: Hd,
    /// MSH-5 receiving application.
    pub receiving_application: Hd,
    /// MSH-6 receiving facility (the IIS).
    pub receiving_facility: Hd,
    /// MSH-22 sending responsible organization name; defaults to MSH-4's namespace.
    pub sending_organization: String,
    /// MSH-23 receiving responsible organization name; defaults to MSH-6's namespace.
    pub receiving_organization: String,
    /// Send MSH-22 / MSH-23 (v2.7.1 fields the IG pre-adopts; a few old receivers reject them).
    pub send_responsible_organizations: bool,
    /// MSH-11: `P` production, `T` training, `D` debugging.
    pub processing_id: ProcessingId,
    /// PID-3.4 assigning authority when the record has none.
    pub patient_id_authority: Hd,
    /// XCN.9 assigning authority for provider ids that are not NPIs.
    pub provider_id_authority: Hd,
    /// ORC-3.2 namespace of the filler order number; defaults to MSH-3's namespace.
    pub filler_namespace: String,
    /// Send PD1 (publicity, protection, registry status) when the record has the data.
    pub send_pd1: bool,
    /// Send NK1 for the responsible party when the record has one.
    pub send_nk1: bool,
    /// Send the funding-source OBX (30963-3) for new administrations.
    pub send_funding_source: bool,
    /// Send the dose-number OBX (30973-2) when the record has a dose number.
    pub send_dose_number: bool,
    /// Send RXA-4 (end of administration) equal to RXA-3; optional in the IG.
    pub send_rxa4: bool,
    /// Send the HL7 0162 route code as RXR-1's alternate (`C28161^Intramuscular^NCIT^IM^…^HL70162`).
    pub route_alternate: bool,
    /// Where the NDC goes in RXA-5.
    pub ndc: NdcPlacement,
    /// How VIS documents are sent.
    pub vis_method: VisMethod,
    /// Eligibility codes accepted besides HL7 table 0064.
    pub local_eligibility_codes: Vec<LocalCode>,
    /// Funding-source codes accepted besides PHVS_ImmunizationFundingSource_IIS.
    pub local_funding_codes: Vec<LocalCode>,
}

impl Default for MessageProfile {
    fn default() -> Self {
        Self {
            sending_application: Hd::named("IZRELAY"),
            sending_facility: Hd::default(),
            receiving_application: Hd::default(),
            receiving_facility: Hd::default(),
            sending_organization: String::new(),
            receiving_organization: String::new(),
            send_responsible_organizations: true,
            processing_id: ProcessingId::Production,
            patient_id_authority: Hd::named("IZRELAY"),
            provider_id_authority: Hd::named("IZRELAY"),
            filler_namespace: String::new(),
            send_pd1: true,
            send_nk1: true,
            send_funding_source: true,
            send_dose_number: true,
            send_rxa4: false,
            route_alternate: true,
            ndc: NdcPlacement::Alternate,
            vis_method: VisMethod::Barcode,
            local_eligibility_codes: Vec::new(),
            local_funding_codes: Vec::new(),
        }
    }
}

impl MessageProfile {
    /// The local eligibility code `code`, if configured.
    pub(crate) fn local_eligibility(&self, code: &str) -> Option<&LocalCode> {
        self.local_eligibility_codes.iter().find(|c| c.code == code)
    }

    /// The local funding-source code `code`, if configured.
    pub(crate) fn local_funding(&self, code: &str) -> Option<&LocalCode> {
        self.local_funding_codes.iter().find(|c| c.code == code)
    }
}

/// The message profile of each provider's IIS, with a default for the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profiles {
    /// Used for providers without their own profile.
    pub default: MessageProfile,
    /// Per provider id (the IIS account number).
    pub by_provider: std::collections::BTreeMap<String, MessageProfile>,
}

impl Profiles {
    /// Every provider uses `profile`.
    pub fn single(profile: MessageProfile) -> Self {
        Self { default: profile, by_provider: std::collections::BTreeMap::new() }
    }

    /// The profile for `provider`.
    pub fn get(&self, provider: Option<&str>) -> &MessageProfile {
        provider.and_then(|p| self.by_provider.get(p)).unwrap_or(&self.default)
    }
}
