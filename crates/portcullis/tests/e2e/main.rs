//! End-to-end tests: a real gateway process between real clients (`psql`,
//! tokio-postgres, `curl`) and throwaway PostgreSQL clusters.

#![allow(clippy::unwrap_used)]

mod approvals;
mod audit;
mod common;
mod compat;
mod connect;
mod console;
mod described;
mod encodings;
mod evidence;
mod grants;
mod hardening;
mod identity;
mod load;
mod masking;
mod names;
mod openapi;
mod policy;
mod protocol;
mod relations;
mod relay;
mod robustness;
mod ssh;
mod ssh_hostile;
mod ssh_login;
mod strict_masking;
mod webhooks;
