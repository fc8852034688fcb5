//! Easel: a self-hosted image-generation task API.
//!
//! `main.rs` is a thin CLI; everything is built here from a [`config::Config`] so that the
//! tests can start the same application on port 0.

pub mod accounts;
pub mod api;
pub mod app;
pub mod catalog;
pub mod claim_loop;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod db;
pub mod egress;
pub mod ids;
pub mod listener;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod money;
pub mod nodes;
pub mod providers;
pub mod retention;
pub mod routing;
pub mod shutdown;
pub mod signals;
pub mod sse_reader;
pub mod storage;
pub mod tasks;
pub mod transport;
pub mod webhooks;

pub use app::Application;
pub use config::Config;
