//! The lease protocol over HTTP (`design.md` §6): [`HttpLeases`] implements
//! [`LeaseApi`] against control's `/internal/v1/leases` with the proxy secret.
//!
//! Used by the ledger (acquire/extend on the request path when the local slice runs low) and
//! by the reporter (reports, releases). Every call has a short timeout; failures surface as
//! [`LeaseError::Unreachable`] so the ledger can fail closed and the reporter can spill.

use std::time::Duration;

use async_trait::async_trait;
use iron_core::lease::{ExtendRequest, LeaseGrant, LeaseReport, LeaseRequest, ReportAck};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::ledger::{LeaseApi, LeaseError};

pub struct HttpLeases {
    url: String,
    secret: Zeroizing<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HttpLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLeases")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpLeases {
    pub fn new(url: &str, secret: Zeroizing<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpLeases {
            url: url.trim_end_matches('/').to_owned(),
            secret,
            http,
        })
    }

    async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, LeaseError> {
        let resp = self
            .http
            .request(method, format!("{}/internal/v1/leases{path}", self.url))
            .bearer_auth(self.secret.as_str())
            .json(body)
            .send()
            .await
            .map_err(|e| LeaseError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(LeaseError::UnknownLease);
        }
        if status.is_server_error() {
            return Err(LeaseError::Unreachable(format!(
                "control answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(LeaseError::Refused(format!("control answered {status}")));
        }
        resp.json()
            .await
            .map_err(|e| LeaseError::Unreachable(e.without_url().to_string()))
    }
}

#[async_trait]
impl LeaseApi for HttpLeases {
    async fn acquire(&self, req: LeaseRequest) -> Result<LeaseGrant, LeaseError> {
        self.call(reqwest::Method::POST, "", &req).await
    }

    async fn extend(&self, lease_id: &str, req: ExtendRequest) -> Result<LeaseGrant, LeaseError> {
        self.call(reqwest::Method::POST, &format!("/{lease_id}/extend"), &req)
            .await
    }

    async fn report(&self, lease_id: &str, report: LeaseReport) -> Result<ReportAck, LeaseError> {
        self.call(
            reqwest::Method::POST,
            &format!("/{lease_id}/report"),
            &report,
        )
        .await
    }

    async fn release(&self, lease_id: &str, report: LeaseReport) -> Result<(), LeaseError> {
        let _: serde_json::Value = self
            .call(reqwest::Method::DELETE, &format!("/{lease_id}"), &report)
            .await?;
        Ok(())
    }
}
