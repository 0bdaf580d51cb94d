#![allow(clippy::unwrap_used)] // tests fail loudly
//! Integration tests, compiled into one binary. Each test starts its own
//! `redis-server` on a free port (see `support`) and its own gateway on port 0.

mod abuse;
mod chaos;
mod cli;
mod connections;
mod conversions;
mod faults;
mod follow;
mod hostile;
mod links;
mod openapi;
mod props;
mod real_links;
mod stats;
mod support;
mod vectors;
