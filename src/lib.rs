//! startgate: the startup gate for database-backed apps.
//!
//! It waits for the database, takes a lock so that one replica migrates, applies pending
//! migrations with lock and statement timeouts, verifies the schema, then starts or watches the
//! app, probes its startup, explains a hang, and publishes every phase. The user-facing contract
//! is `DESIGN.md` (in the shared folder) and the README; the map of this crate is
//! `ARCHITECTURE.md`.
//!
//! Pure cores ([`config`], [`migrate`], [`phase`], [`duration`]) import neither tokio nor sqlx;
//! only [`backend`] talks to a database.

pub mod alembic;
pub mod backend;
pub mod backup;
pub mod cli;
pub mod config;
pub mod dburl;
pub mod duration;
pub mod endpoint;
pub mod exit;
pub mod logging;
pub mod migrate;
pub mod phase;
pub mod progress;
pub mod redact;
pub mod report;
pub mod run;
pub mod schema;
pub mod supervise;
pub mod termination;
pub mod tool;
pub mod wait;
