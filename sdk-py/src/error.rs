//! Rust errors → the exceptions of `iron_sdk.errors` (defined in Python, so both halves of the
//! SDK raise the same classes). Work done without the GIL returns [`SdkError`]; the
//! conversion to a Python exception happens once the GIL is held again.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Why a native call failed. Messages are shown to users as they are: they name the bad
/// input and never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkError {
    /// Bad input (`iron_sdk.InvalidRequest`, also a `ValueError`), with an error code.
    Invalid { code: &'static str, message: String },
    /// The embedded proxy failed to start or stop (`iron_sdk.IronError`).
    Proxy(String),
}

impl SdkError {
    pub fn invalid(message: impl Into<String>) -> Self {
        SdkError::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    pub fn invalid_code(code: &'static str, message: impl Into<String>) -> Self {
        SdkError::Invalid {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdkError::Invalid { message, .. } | SdkError::Proxy(message) => f.write_str(message),
        }
    }
}

/// The class `name` of `iron_sdk.errors`.
fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("iron_sdk.errors")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

impl From<SdkError> for PyErr {
    fn from(e: SdkError) -> PyErr {
        Python::attach(|py| {
            let (class, code) = match &e {
                SdkError::Invalid { code, .. } => ("InvalidRequest", *code),
                SdkError::Proxy(_) => ("IronError", "local_proxy_error"),
            };
            match error_class(py, class) {
                Ok(ty) => PyErr::from_type(ty, (e.to_string(), code)),
                // Only when the native module is used without its package.
                Err(_) => PyRuntimeError::new_err(e.to_string()),
            }
        })
    }
}

pub type SdkResult<T> = Result<T, SdkError>;
