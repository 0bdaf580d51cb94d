//! linkloop: a gateway between social notes and marketplaces.
//!
//! A note links to a product on Taobao, Tmall or JD through a **tracked link**
//! (`/j/{link}`). linkloop verifies the link, mints a **click token**, records the
//! click in Redis and answers `302` to the product page with a signed **jump URL**.
//!
//! Module map (each module's own doc says what it owns and what it must never do):
//!
//! | module | owns |
//! |---|---|
//! | [`platform`] | Taobao/Tmall/JD rules: product-URL parsing, canonical product pages. No I/O. |
//! | [`note`] | RED note ids from bare ids, note URLs and share texts. No I/O. |
//! | [`signing`] | HMAC-SHA256 keyrings by key id, constant-time verification. No I/O. |
//! | [`link`] | The tracked-link wire format v1 (`docs/link-format.md`). No I/O. |
//! | [`jump`] | The jump-URL signature v1 (`docs/jump-url.md`). No I/O. |
//! | [`conversion`] | Conversion callbacks: body validation, fingerprints, merchant signatures. No I/O. |
//! | [`click`] | Click tokens, user-agent classes, the click record and how it is made durable. |
//! | [`stats`] | The funnel report: date ranges, per-day rows, CSV and table rendering. No I/O. |
//! | [`store`] | All Redis code: key schema, the click writer, the aggregator, the supervised `redis-server`. |
//! | [`http`] | Routes and middleware: turns requests into calls, results into responses. |
//! | [`config`] | Configuration: TOML file, environment overrides, dev keys. |
//! | [`app`] | Wiring: config → state → router → server, graceful shutdown. |
//! | [`metrics`] | Every Prometheus metric, declared in one place. |

#![forbid(unsafe_code)]

pub mod app;
pub mod click;
pub mod config;
pub mod conversion;
pub mod http;
pub mod jump;
pub mod link;
pub mod metrics;
pub mod note;
pub mod platform;
pub mod signing;
pub mod stats;
pub mod store;
pub mod telemetry;
