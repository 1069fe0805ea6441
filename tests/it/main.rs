//! izrelay integration tests: one binary (ripgrep's layout), one module per area.

mod cli;
mod corpus;
mod credentials;
mod daemon;
mod dataverse;
mod dataverse_sim;
mod faults;
mod forward;
mod golden;
mod hl7apy;
mod packaging;
mod props;
mod security;
mod store;
mod tables;
mod tls;
mod util;
