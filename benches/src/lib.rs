//! # iron-bench
//!
//! Iron's benchmarks (`design.md` §1 `benches/`, style habit 12): the criterion suites in
//! `benches/benches/` measure the per-request building blocks of the data plane, and the
//! `iron-bench` binary measures the whole proxy under load against a direct connection and a
//! bare pass-through. Results for `docs/benchmarks.md` come from here.
//!
//! Module map: [`fixtures`] (stable inputs for both), [`run`] (the harness sequence) drives
//! [`mock`] (in-process upstream), [`proxy`] (the `iron-proxy` process) and [`load`] (the
//! open- and closed-loop generators), reads [`procfs`], and hands a [`report::Report`] to
//! `main.rs`, together with the [`machine`] it ran on.

pub mod fixtures;
pub mod load;
pub mod machine;
pub mod mock;
pub mod procfs;
pub mod proxy;
pub mod report;
pub mod run;

/// The workspace this crate was built from, if it is still there (for the git revision and
/// the stale-binary check).
pub fn workspace_root() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    root.join("Cargo.toml").exists().then(|| root.to_path_buf())
}
