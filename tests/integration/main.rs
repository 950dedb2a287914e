//! Integration tests: one binary, one module per scenario. They run the
//! built `strata` binary against real directories and vaults, and compare
//! restored bytes, modes and times with the source.
#![allow(clippy::unwrap_used)]

mod cli;
mod continuous;
mod crash;
mod damage;
mod dedup;
mod faults;
mod mount;
mod password;
mod roundtrip;
mod s3;
mod tamper;
mod throttle;
