//! # iron-sdk-py
//!
//! The native half of Iron's Python SDK: the private module `iron_sdk._iron_sdk`, imported by
//! the public Python package `iron_sdk` (layout after pydantic-core: Rust builds, Python
//! composes; the typed surface lives in `python/iron_sdk/_iron_sdk.pyi`).
//!
//! Wrappers only, no logic of their own:
//! - [`local`]: `LocalProxy`, the real `iron_proxy` in static mode on a background thread;
//! - [`helpers`]: PII redaction and detection (`iron_core::pii`), cost estimates
//!   (`iron_core::pricing`), exact parsing of dollar amounts and TTLs, IC token minting
//!   with an in-process key (`iron_core::token`);
//! - [`error`]: the mapping of Rust errors to the Python exceptions of `iron_sdk.errors`.
//!
//! Every call that does real work (starting or stopping a proxy, scanning text, signing)
//! runs inside `Python::detach`, so other Python threads keep running.
//!
//! The workspace's `unsafe_code = "forbid"` holds here too: the `unsafe` FFI glue is
//! generated inside PyO3's macros (an external crate), and this crate writes none.

pub mod error;
pub mod helpers;
pub mod local;

use pyo3::prelude::*;

/// `iron_sdk._iron_sdk`: see the module docs and `_iron_sdk.pyi`.
#[pymodule]
fn _iron_sdk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(helpers::redact, m)?)?;
    m.add_function(wrap_pyfunction!(helpers::detect, m)?)?;
    m.add_function(wrap_pyfunction!(helpers::pii_types, m)?)?;
    m.add_function(wrap_pyfunction!(helpers::estimate_cost_microdollars, m)?)?;
    m.add_function(wrap_pyfunction!(helpers::parse_usd_microdollars, m)?)?;
    m.add_function(wrap_pyfunction!(helpers::parse_ttl_seconds, m)?)?;
    m.add_function(wrap_pyfunction!(helpers::new_token_id, m)?)?;
    m.add_class::<helpers::SigningKey>()?;
    m.add_class::<local::LocalProxy>()?;
    Ok(())
}
