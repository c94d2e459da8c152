//! Single-process local mode (`iron up`): the data directory and its secrets.
//!
//! `DIR/master.key` (base64 master key), `DIR/proxy.secret` and `DIR/admin.key` are created
//! with mode 0600 on first start and reused afterwards; the embedded store lives in
//! `DIR/control.redb`. [`register_env_providers`] turns `OPENAI_API_KEY` /
//! `ANTHROPIC_API_KEY` into provider deployments (created, or updated when the key or URL
//! changed). Note: the master key sits next to the data it protects — local mode protects
//! against leaking the store file alone, not the whole directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iron_core::transit::{MasterKey, MasterKeyring};
use iron_core::wire::ProviderKind;

use crate::config::{Env, Secrets};
use crate::error::ApiError;
use crate::keys::{Secret, generate_api_key, generate_secret};
use crate::service::{Actor, NewProvider, ProviderUpdate, Service};
use crate::validate::{Name, ProviderKeyInput};

/// File names inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
pub const PROXY_SECRET_FILE: &str = "proxy.secret";
pub const ADMIN_KEY_FILE: &str = "admin.key";
pub const STORE_FILE: &str = "control.redb";

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The secrets of a data directory.
#[derive(Debug)]
pub struct LocalDir {
    pub dir: PathBuf,
    pub secrets: Secrets,
    /// The admin key (also in `DIR/admin.key`).
    pub admin_key: Secret,
    /// True when this start created the admin key (print it once).
    pub admin_key_created: bool,
}

impl LocalDir {
    pub fn store_path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new 0600 file; fails if it exists.
fn write_new_secret(path: &Path, content: &str) -> Result<(), LocalError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(content.as_bytes()).map_err(io(path))?;
    f.write_all(b"\n").map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Reads a secret file, or creates it with `make()`. Returns (value, created).
fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> zeroize::Zeroizing<String>,
) -> Result<(zeroize::Zeroizing<String>, bool), LocalError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok((zeroize::Zeroizing::new(s.trim().to_owned()), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let v = make();
            write_new_secret(path, &v)?;
            Ok((v, true))
        }
        Err(e) => Err(LocalError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Creates (first start) or opens the data directory and its secrets.
pub fn init_data_dir(dir: &Path) -> Result<LocalDir, LocalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let mk_path = dir.join(MASTER_KEY_FILE);
    let (mk_text, _) = read_or_create(&mk_path, || MasterKey::generate().to_base64())?;
    let master = MasterKey::from_base64(&mk_text).map_err(|_| LocalError::Invalid {
        path: mk_path.clone(),
        message: "expected 32 bytes, base64-encoded".into(),
    })?;
    let ps_path = dir.join(PROXY_SECRET_FILE);
    let (proxy_secret, _) = read_or_create(&ps_path, generate_secret)?;
    if proxy_secret.len() < 16 {
        return Err(LocalError::Invalid {
            path: ps_path,
            message: "secret too short".into(),
        });
    }
    let ak_path = dir.join(ADMIN_KEY_FILE);
    let (admin_key, created) = read_or_create(&ak_path, generate_api_key)?;
    if !admin_key.starts_with(crate::keys::API_KEY_PREFIX) {
        return Err(LocalError::Invalid {
            path: ak_path,
            message: "not an iron_ak_ key".into(),
        });
    }
    let admin_key = Secret::new(admin_key.as_str());
    Ok(LocalDir {
        dir: dir.to_owned(),
        secrets: Secrets {
            master_keys: Arc::new(MasterKeyring::new(master, Vec::new())),
            proxy_secret: Secret::new(proxy_secret.as_str()),
            bootstrap_admin_key: Some(admin_key.clone()),
        },
        admin_key,
        admin_key_created: created,
    })
}

/// A provider registered from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvProvider {
    pub name: String,
    pub base_url: String,
    /// `created`, `updated` or `unchanged`.
    pub action: &'static str,
}

/// Registers `openai` / `anthropic` providers from `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`.
/// `upstream_base_url` replaces the real provider URLs (mock upstreams in tests).
pub async fn register_env_providers(
    svc: &Service,
    env: &dyn Env,
    upstream_base_url: Option<&str>,
) -> Result<Vec<EnvProvider>, ApiError> {
    let actor = Actor::system();
    let mut out = Vec::new();
    for (var, name, kind, real_url) in [
        (
            "OPENAI_API_KEY",
            "openai",
            ProviderKind::Openai,
            "https://api.openai.com",
        ),
        (
            "ANTHROPIC_API_KEY",
            "anthropic",
            ProviderKind::Anthropic,
            "https://api.anthropic.com",
        ),
    ] {
        let Some(key) = env
            .var(var)
            .map(zeroize::Zeroizing::new)
            .filter(|k| !k.trim().is_empty())
        else {
            continue;
        };
        let key = ProviderKeyInput::parse(key.trim().to_owned())
            .map_err(|m| ApiError::invalid(format!("{var}: {m}")))?;
        let base_url = upstream_base_url.unwrap_or(real_url);
        let action = match svc.store.provider_by_name(name).await? {
            None => {
                let req = NewProvider {
                    name: Name::parse(name).map_err(ApiError::invalid)?,
                    kind,
                    base_url: base_url.to_owned(),
                    api_key: key,
                    models: Vec::new(),
                    priority: 0,
                    timeouts: Default::default(),
                };
                svc.create_provider(&actor, req).await?;
                "created"
            }
            Some(p) => {
                let same_key = svc.open_provider_key(&p)?.as_slice() == key.0.as_bytes();
                let normalized =
                    crate::validate::check_upstream_url(base_url, svc.allow_private_upstreams)
                        .map_err(|m| ApiError::invalid(format!("base URL: {m}")))?;
                let mut p = p;
                let mut changed = false;
                if p.base_url != normalized {
                    let update = ProviderUpdate {
                        base_url: Some(base_url.to_owned()),
                        ..ProviderUpdate::default()
                    };
                    p = svc.update_provider(&actor, p, update).await?;
                    changed = true;
                }
                if !same_key {
                    svc.rotate_provider_key(&actor, p, key).await?;
                    changed = true;
                }
                if changed { "updated" } else { "unchanged" }
            }
        };
        out.push(EnvProvider {
            name: name.into(),
            base_url: base_url.into(),
            action,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_secrets_are_created_once_with_0600() {
        let d = tempfile::tempdir().unwrap();
        let first = init_data_dir(d.path()).unwrap();
        assert!(first.admin_key_created);
        let second = init_data_dir(d.path()).unwrap();
        assert!(!second.admin_key_created);
        assert_eq!(first.admin_key.expose(), second.admin_key.expose());
        assert_eq!(
            first.secrets.master_keys.current().key_id(),
            second.secrets.master_keys.current().key_id()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [MASTER_KEY_FILE, PROXY_SECRET_FILE, ADMIN_KEY_FILE] {
                let mode = std::fs::metadata(d.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
    }
}
