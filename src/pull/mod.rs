//! Getting records in: the offline file import (and, with the Dataverse issue, the Web API pull).

pub mod import;
