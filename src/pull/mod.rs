//! Getting records in: the offline file import (and, with the Dataverse issue, the Web API pull).

pub mod dataverse;
pub mod import;
