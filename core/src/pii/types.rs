//! Vocabulary of the PII engine: the detected types, the actions a policy can take, the two
//! directions, and the per-project [`PiiPolicy`]. The proxy reads a policy from the project
//! (control service) and hands it to stage 5 (request redaction) and stage 8 (stream/response
//! restore); metrics use [`PiiType::as_str`], [`Action::as_str`] and [`Direction::as_str`] as
//! label values (`iron_proxy_pii_detections_total{type,direction,action}`).

use std::fmt;
use std::str::FromStr;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A kind of personal or secret data the detector recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiType {
    /// An e-mail address.
    Email,
    /// A telephone number (E.164, NANP, common European national formats).
    Phone,
    /// A payment card number (Luhn and issuer prefix checked).
    CreditCard,
    /// A US social security number (area/group/serial rules checked).
    UsSsn,
    /// An IBAN (country length and mod-97 checked).
    Iban,
    /// An IPv4 or IPv6 address (parsed).
    IpAddress,
    /// A credential: cloud/API keys, tokens, JWTs, PEM private keys.
    Secret,
}

impl PiiType {
    /// Every type, in declaration order (also the order of the internal count tables).
    pub const ALL: [PiiType; 7] = [
        PiiType::Email,
        PiiType::Phone,
        PiiType::CreditCard,
        PiiType::UsSsn,
        PiiType::Iban,
        PiiType::IpAddress,
        PiiType::Secret,
    ];

    /// The wire/metric name: `EMAIL`, `PHONE`, `CREDIT_CARD`, `US_SSN`, `IBAN`, `IP_ADDRESS`,
    /// `SECRET`. Also the word used in placeholders (`[EMAIL_1]`, `[REDACTED:EMAIL]`).
    pub const fn as_str(self) -> &'static str {
        match self {
            PiiType::Email => "EMAIL",
            PiiType::Phone => "PHONE",
            PiiType::CreditCard => "CREDIT_CARD",
            PiiType::UsSsn => "US_SSN",
            PiiType::Iban => "IBAN",
            PiiType::IpAddress => "IP_ADDRESS",
            PiiType::Secret => "SECRET",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PiiType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown PII type, action or direction name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}`")]
pub struct ParseNameError {
    what: &'static str,
    name: String,
}

impl FromStr for PiiType {
    type Err = ParseNameError;

    /// Accepts the canonical names (`EMAIL`, `CREDIT_CARD`, …) in any letter case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PiiType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseNameError {
                what: "PII type",
                name: s.to_owned(),
            })
    }
}

/// What the policy does with a detection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Replace the value (placeholder or `[REDACTED:TYPE]`). The default.
    #[default]
    Redact,
    /// Refuse the request (400 `pii_blocked`) or stop the response; names the types only.
    Block,
    /// Leave the value in place and only count it.
    Allow,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 3] = [Action::Redact, Action::Block, Action::Allow];

    /// Metric label value: `redact`, `block`, `allow`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Redact => "redact",
            Action::Block => "block",
            Action::Allow => "allow",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseNameError {
                what: "PII action",
                name: s.to_owned(),
            })
    }
}

/// Which way the text travels: agent → provider (request) or provider → agent (response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Text the agent sends to the provider (stage 5).
    Request,
    /// Text the provider sends back (stage 8).
    Response,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Direction; 2] = [Direction::Request, Direction::Response];

    /// Metric label value: `request`, `response`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One [`Action`] per [`PiiType`]. Serialized as a map `{"EMAIL": "block", …}`; types left out
/// of the map keep the default action, `redact`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeActions([Action; 7]);

impl TypeActions {
    /// The same action for every type.
    pub const fn uniform(action: Action) -> Self {
        TypeActions([action; 7])
    }

    /// The action for `kind`.
    pub const fn get(&self, kind: PiiType) -> Action {
        self.0[kind.index()]
    }

    /// Set the action for `kind`.
    pub fn set(&mut self, kind: PiiType, action: Action) {
        self.0[kind.index()] = action;
    }

    /// Builder form of [`TypeActions::set`].
    #[must_use]
    pub fn with(mut self, kind: PiiType, action: Action) -> Self {
        self.set(kind, action);
        self
    }

    /// `(type, action)` pairs for every type.
    pub fn iter(&self) -> impl Iterator<Item = (PiiType, Action)> + '_ {
        PiiType::ALL.into_iter().map(|t| (t, self.get(t)))
    }
}

impl Default for TypeActions {
    fn default() -> Self {
        TypeActions::uniform(Action::Redact)
    }
}

impl Serialize for TypeActions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(7))?;
        for (kind, action) in self.iter() {
            map.serialize_entry(&kind, &action)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TypeActions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TypeActions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a map from PII type (EMAIL, PHONE, …) to action (redact, block, allow)",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypeActions, A::Error> {
                let mut out = TypeActions::default();
                while let Some((kind, action)) = map.next_entry::<PiiType, Action>()? {
                    out.set(kind, action);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A project's PII policy. The default redacts every type in both directions, reversibly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiiPolicy {
    /// Actions for text sent to the provider.
    pub request: TypeActions,
    /// Actions for PII that first appears in the provider's answer.
    pub response: TypeActions,
    /// `true`: request PII becomes `[EMAIL_1]`-style placeholders that are restored in the
    /// answer. `false`: request PII becomes `[REDACTED:EMAIL]` and is gone for good.
    pub reversible: bool,
}

impl Default for PiiPolicy {
    fn default() -> Self {
        PiiPolicy {
            request: TypeActions::default(),
            response: TypeActions::default(),
            reversible: true,
        }
    }
}

impl PiiPolicy {
    /// The action for `kind` travelling in `dir`.
    pub const fn action(&self, dir: Direction, kind: PiiType) -> Action {
        match dir {
            Direction::Request => self.request.get(kind),
            Direction::Response => self.response.get(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in PiiType::ALL {
            assert_eq!(t.as_str().parse::<PiiType>(), Ok(t));
            assert_eq!(
                serde_json::to_string(&t).ok(),
                Some(format!("\"{}\"", t.as_str()))
            );
        }
        assert_eq!("credit_card".parse::<PiiType>(), Ok(PiiType::CreditCard));
        assert!("CARD".parse::<PiiType>().is_err());
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert_eq!(
            serde_json::to_string(&Action::Block).ok().as_deref(),
            Some("\"block\"")
        );
    }

    #[test]
    fn policy_serde() {
        let p: PiiPolicy = serde_json::from_str(
            r#"{"request":{"EMAIL":"block","US_SSN":"allow"},"reversible":false}"#,
        )
        .unwrap_or_default();
        assert_eq!(p.action(Direction::Request, PiiType::Email), Action::Block);
        assert_eq!(p.action(Direction::Request, PiiType::UsSsn), Action::Allow);
        assert_eq!(p.action(Direction::Request, PiiType::Phone), Action::Redact);
        assert_eq!(
            p.action(Direction::Response, PiiType::Email),
            Action::Redact
        );
        assert!(!p.reversible);
        let back: Result<PiiPolicy, _> =
            serde_json::from_value(serde_json::to_value(&p).unwrap_or_default());
        assert_eq!(back.ok(), Some(p));
        assert!(serde_json::from_str::<PiiPolicy>(r#"{"requets":{}}"#).is_err());
        assert!(serde_json::from_str::<PiiPolicy>(r#"{"request":{"CARD":"block"}}"#).is_err());
        let d = PiiPolicy::default();
        assert!(d.reversible);
        assert!(
            PiiType::ALL
                .iter()
                .all(|&t| d.action(Direction::Response, t) == Action::Redact)
        );
    }
}
