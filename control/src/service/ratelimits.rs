//! Rate limits (RPM/TPM, `docs/decisions/0003-rate-limits.md`): the authority behind
//! `POST /internal/v1/ratelimits`.
//!
//! Where it sits: a proxy's *ratelimit* stage asks for a slice of a scope's window when its
//! local slice is empty (one batch per request: token and project, requests and tokens);
//! this validates the batch and applies it in the store ([`crate::store::Store::rate_take`],
//! atomic per project). No audit entry: takes are traffic, not configuration.

use iron_core::ratelimit::{MAX_LIMIT, RateTakeRequest, RateTakeResponse};
use iron_core::token::unix_now_ms;

use super::Service;
use crate::error::ApiError;

/// Most takes in one batch (token + project × requests + tokens = 4 per request).
pub const MAX_TAKES: usize = 16;

/// `tok_…` / `prj_…` ids: the prefix, then 1 to 124 ASCII letters, digits, `_` or `-`.
fn valid_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        (1..=124).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Checks a batch; every take ends up naming its project.
pub fn validate(req: &mut RateTakeRequest) -> Result<(), ApiError> {
    if req.takes.is_empty() || req.takes.len() > MAX_TAKES {
        return Err(ApiError::invalid(format!(
            "takes: 1 to {MAX_TAKES} entries"
        )));
    }
    for (i, t) in req.takes.iter_mut().enumerate() {
        let project = if let Some(tok) = t.scope.strip_prefix("token:") {
            if !valid_id(tok, "tok_") {
                return Err(ApiError::invalid(format!(
                    "takes[{i}].scope: `token:` must be followed by a token id"
                )));
            }
            match &t.project {
                Some(p) => p.clone(),
                None => {
                    return Err(ApiError::invalid(format!(
                        "takes[{i}].project: required for token scopes"
                    )));
                }
            }
        } else if let Some(prj) = t.scope.strip_prefix("project:") {
            if t.project.as_deref().is_some_and(|p| p != prj) {
                return Err(ApiError::invalid(format!(
                    "takes[{i}].project: differs from the scope's project"
                )));
            }
            prj.to_owned()
        } else {
            return Err(ApiError::invalid(format!(
                "takes[{i}].scope: `token:tok_…` or `project:prj_…`"
            )));
        };
        if !valid_id(&project, "prj_") {
            return Err(ApiError::invalid(format!(
                "takes[{i}].project: not a project id"
            )));
        }
        t.project = Some(project);
        if !(1..=MAX_LIMIT).contains(&t.limit) {
            return Err(ApiError::invalid(format!(
                "takes[{i}].limit: 1 to {MAX_LIMIT}"
            )));
        }
        if t.want > MAX_LIMIT || (t.want == 0 && !t.force) {
            return Err(ApiError::invalid(format!(
                "takes[{i}].want: 1 to {MAX_LIMIT}"
            )));
        }
    }
    Ok(())
}

impl Service {
    /// `POST /internal/v1/ratelimits`.
    pub async fn take_rate_limits(
        &self,
        mut req: RateTakeRequest,
    ) -> Result<RateTakeResponse, ApiError> {
        validate(&mut req)?;
        let grants = self.store.rate_take(&req.takes, unix_now_ms()).await?;
        Ok(RateTakeResponse { grants })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iron_core::ratelimit::{RateKind, RateTake};

    fn take(scope: &str, project: Option<&str>) -> RateTake {
        RateTake {
            scope: scope.into(),
            kind: RateKind::Requests,
            limit: 10,
            want: 1,
            min: 0,
            force: false,
            project: project.map(Into::into),
        }
    }

    #[test]
    fn validation_names_the_field() {
        let ok = |takes| validate(&mut RateTakeRequest { takes }).is_ok();
        assert!(ok(vec![take("project:prj_1", None)]));
        assert!(ok(vec![take("token:tok_1", Some("prj_1"))]));
        assert!(!ok(vec![]));
        assert!(!ok(vec![take("token:tok_1", None)]));
        assert!(!ok(vec![take("token:tok_1", Some("prj_}x"))]));
        assert!(!ok(vec![take("project:prj_1", Some("prj_2"))]));
        assert!(!ok(vec![take("user:u", Some("prj_1"))]));
        let mut zero = take("project:prj_1", None);
        zero.limit = 0;
        assert!(!ok(vec![zero]));
        let mut r = RateTakeRequest {
            takes: vec![take("project:prj_9", None)],
        };
        validate(&mut r).ok();
        assert_eq!(r.takes[0].project.as_deref(), Some("prj_9"));
    }
}
