//! Master-key checks and rotation (`iron-control rotate-master-key`).
//!
//! A sealed marker in the store's metadata records which master key the data was written
//! with, so starting with the wrong `IRON_MASTER_KEY` fails at once with a clear message
//! instead of on the first provider read. Rotation re-seals every provider key, signing-key
//! seed and the marker under the current key; older keys must be supplied in
//! `IRON_MASTER_KEY_PREVIOUS` while it runs.

use iron_core::transit::SealError;
use iron_core::wire::SealedSecret;
use serde_json::json;

use super::{Actor, Service, walk};
use crate::store::StoreError;

const MARKER_KEY: &str = "master_key_check";
const MARKER_AAD: &[u8] = b"iron master key check";
const MARKER_TEXT: &[u8] = b"iron";

/// Master key problems at startup or during rotation.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "IRON_MASTER_KEY does not match the key this store was written with (sealed with key id \
         {0}); set the right key, or the old one in IRON_MASTER_KEY_PREVIOUS and run \
         `iron-control rotate-master-key`"
    )]
    WrongKey(String),
    #[error("stored {what} could not be opened: {source}")]
    Open { what: String, source: SealError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// What a rotation re-sealed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub providers: usize,
    pub signing_keys: usize,
}

impl Service {
    /// Verifies (or, on a new store, records) the master key.
    pub async fn check_master_key(&self) -> Result<(), MasterKeyError> {
        match self.store.get_meta(MARKER_KEY).await? {
            Some(bytes) => {
                let sealed: SealedSecret = serde_json::from_slice(&bytes)
                    .map_err(|e| MasterKeyError::Other(format!("master key marker: {e}")))?;
                self.keyring
                    .open(&sealed, MARKER_AAD)
                    .map(|_| ())
                    .map_err(|_| MasterKeyError::WrongKey(sealed.key_id))
            }
            None => self.write_marker().await,
        }
    }

    async fn write_marker(&self) -> Result<(), MasterKeyError> {
        let sealed = self.keyring.seal(MARKER_TEXT, MARKER_AAD);
        let bytes =
            serde_json::to_vec(&sealed).map_err(|e| MasterKeyError::Other(e.to_string()))?;
        self.store.put_meta(MARKER_KEY, &bytes).await?;
        Ok(())
    }

    /// Re-seals everything under the current master key.
    pub async fn rotate_master_key(&self) -> Result<RotationReport, MasterKeyError> {
        let mut report = RotationReport::default();
        let store = self.store.clone();
        let providers = walk(|page| {
            let store = store.clone();
            async move { store.list_providers(&page).await }
        })
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?;
        for mut p in providers {
            if !self.keyring.is_stale(&p.api_key) {
                continue;
            }
            let key = self
                .keyring
                .open(&p.api_key, p.id.as_bytes())
                .map_err(|source| MasterKeyError::Open {
                    what: format!("provider {}", p.id),
                    source,
                })?;
            p.api_key = self.keyring.seal(&key, p.id.as_bytes());
            self.store.update_provider(&p).await?;
            report.providers += 1;
        }
        for mut k in self.store.list_signing_keys().await? {
            if !self.keyring.is_stale(&k.seed) {
                continue;
            }
            let seed = self
                .keyring
                .open(&k.seed, k.kid.as_bytes())
                .map_err(|source| MasterKeyError::Open {
                    what: format!("signing key {}", k.kid),
                    source,
                })?;
            k.seed = self.keyring.seal(&seed, k.kid.as_bytes());
            self.store.put_signing_key(&k).await?;
            report.signing_keys += 1;
        }
        self.write_marker().await?;
        self.audit(
            &Actor::system(),
            "master_key.rotate",
            self.keyring.current().key_id(),
            None,
            json!({"providers": report.providers, "signing_keys": report.signing_keys}),
        )
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?;
        Ok(report)
    }
}
