//! The dashboard's typed API client is checked (vitest, `dashboard/tests/openapi.test.ts`)
//! against `dashboard/openapi.json`; this test keeps that snapshot equal to the document
//! control generates, so a route change that the dashboard does not know about fails here.
//! Refresh with `IRON_UPDATE_OPENAPI=1 cargo test -p iron-control --test openapi_snapshot`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn dashboard_openapi_snapshot_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboard/openapi.json");
    let generated = serde_json::to_value(iron_control::api::openapi()).unwrap();
    if std::env::var_os("IRON_UPDATE_OPENAPI").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        committed == generated,
        "{} is out of date: run IRON_UPDATE_OPENAPI=1 cargo test -p iron-control --test \
         openapi_snapshot, then `npm --prefix dashboard test` to check the client against it",
        path.display()
    );
}
