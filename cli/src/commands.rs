//! The REST-backed commands: provider, project, token, usage, pricing, api-key, audit.
//! Each builds a request from its flags, calls control, and prints a table or JSON.

use iron_core::pii::{Action, PiiPolicy, PiiType};
use std::io::Read;

use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::CliError;
use crate::args::{
    ApiKeyCmd, AuditArgs, AuditFormat, KeySource, OutputFormat, PricingCmd, ProjectCmd,
    ProviderCmd, TokenCmd, UsageArgs,
};
use crate::client::{Body, Client, enc};
use crate::output::{cell, details, print, print_json, rows, table};

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads a provider key from the chosen source. The key never appears in messages.
fn read_key(src: &KeySource) -> Result<Zeroizing<String>, CliError> {
    let key = if let Some(var) = &src.api_key_env {
        Zeroizing::new(std::env::var(var).map_err(|_| {
            CliError::Input(format!(
                "environment variable {var} is not set (--api-key-env)"
            ))
        })?)
    } else if let Some(path) = &src.api_key_file {
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CliError::Input(format!(
                "cannot read {} (--api-key-file): {e}",
                path.display()
            ))
        })?)
    } else {
        let mut s = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Input(format!("cannot read the key from stdin: {e}")))?;
        s
    };
    let trimmed = Zeroizing::new(key.trim().to_owned());
    if trimmed.is_empty() {
        return Err(CliError::Input("the provider key is empty".into()));
    }
    Ok(trimmed)
}

fn emit_one(out: OutputFormat, v: &Value, fields: &[(&str, &str)]) {
    match out {
        OutputFormat::Json => print_json(v),
        OutputFormat::Table => print(&details(v, fields)),
    }
}

fn emit_list(out: OutputFormat, items: &[Value], headers: &[&str], fields: &[&str]) {
    match out {
        OutputFormat::Json => print_json(&Value::Array(items.to_vec())),
        OutputFormat::Table => print(&table(headers, &rows(items, fields))),
    }
}

const PROVIDER_FIELDS: &[(&str, &str)] = &[
    ("name", "name"),
    ("id", "id"),
    ("kind", "kind"),
    ("base url", "base_url"),
    ("models", "models"),
    ("priority", "priority"),
    ("key", "api_key_masked"),
    ("connect timeout (ms)", "connect_timeout_ms"),
    ("first byte timeout (ms)", "first_byte_timeout_ms"),
    ("idle timeout (ms)", "idle_timeout_ms"),
];

/// A provider with its `timeouts` object flattened for the table view (`default` = the
/// proxy's `[upstream]` value).
fn flat_timeouts(v: &Value) -> Value {
    let mut v = v.clone();
    for (flat, key) in [
        ("connect_timeout_ms", "connect_ms"),
        ("first_byte_timeout_ms", "first_byte_ms"),
        ("idle_timeout_ms", "idle_ms"),
    ] {
        let ms = match &v["timeouts"][key] {
            Value::Null => json!("default"),
            other => other.clone(),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert(flat.into(), ms);
        }
    }
    v
}

fn emit_provider(out: OutputFormat, v: &Value) {
    match out {
        OutputFormat::Json => print_json(v),
        OutputFormat::Table => print(&details(&flat_timeouts(v), PROVIDER_FIELDS)),
    }
}

pub async fn provider(c: &Client, out: OutputFormat, cmd: ProviderCmd) -> Result<(), CliError> {
    match cmd {
        ProviderCmd::Add {
            name,
            kind,
            base_url,
            key,
            models,
            priority,
            timeouts,
        } => {
            let k = read_key(&key)?;
            let mut body = json!({"name": name, "kind": kind.as_str(), "base_url": base_url, "api_key": k.as_str()});
            if let Some(m) = models {
                body["models"] = json!(split_list(&m));
            }
            if let Some(p) = priority {
                body["priority"] = json!(p);
            }
            if let Some(t) = timeouts.body() {
                body["timeouts"] = t;
            }
            let v = c.json(Method::POST, "/v1/providers", Some(&body)).await?;
            emit_provider(out, &v);
        }
        ProviderCmd::Update {
            name,
            base_url,
            models,
            priority,
            timeouts,
            clear_timeouts,
        } => {
            let mut body = json!({});
            if let Some(u) = base_url {
                body["base_url"] = json!(u);
            }
            if let Some(m) = models {
                body["models"] = json!(split_list(&m));
            }
            if let Some(p) = priority {
                body["priority"] = json!(p);
            }
            if clear_timeouts {
                body["timeouts"] = Value::Null;
            } else if let Some(t) = timeouts.body() {
                body["timeouts"] = t;
            }
            let v = c
                .json(
                    Method::PATCH,
                    &format!("/v1/providers/{}", enc(&name)),
                    Some(&body),
                )
                .await?;
            emit_provider(out, &v);
        }
        ProviderCmd::List => {
            let items = c.list("/v1/providers").await?;
            emit_list(
                out,
                &items,
                &[
                    "NAME", "ID", "KIND", "BASE URL", "MODELS", "PRIORITY", "KEY",
                ],
                &[
                    "name",
                    "id",
                    "kind",
                    "base_url",
                    "models",
                    "priority",
                    "api_key_masked",
                ],
            );
        }
        ProviderCmd::Show { name } => {
            let v = c.get(&format!("/v1/providers/{}", enc(&name))).await?;
            emit_provider(out, &v);
        }
        ProviderCmd::RotateKey { name, key } => {
            let k = read_key(&key)?;
            let body = json!({"api_key": k.as_str()});
            let v = c
                .json(
                    Method::POST,
                    &format!("/v1/providers/{}/rotate-key", enc(&name)),
                    Some(&body),
                )
                .await?;
            emit_provider(out, &v);
        }
        ProviderCmd::Remove { name } => {
            let v = c
                .json(
                    Method::DELETE,
                    &format!("/v1/providers/{}", enc(&name)),
                    None,
                )
                .await?;
            match out {
                OutputFormat::Json => print_json(&v),
                OutputFormat::Table => {
                    print(&format!("removed provider {name} ({})\n", cell(&v["id"])))
                }
            }
        }
    }
    Ok(())
}

const PROJECT_FIELDS: &[(&str, &str)] = &[
    ("name", "name"),
    ("id", "id"),
    ("budget (USD)", "budget_usd"),
    ("period", "period"),
    ("providers", "providers"),
    ("allowed models", "allowed_models"),
    ("created", "created_at"),
];

pub async fn project(c: &Client, out: OutputFormat, cmd: ProjectCmd) -> Result<(), CliError> {
    match cmd {
        ProjectCmd::Create {
            name,
            budget_usd,
            period,
            providers,
            allowed_models,
        } => {
            let mut body = json!({"name": name});
            if let Some(b) = budget_usd {
                body["budget_usd"] = json!(b);
            }
            if let Some(p) = period {
                body["period"] = json!(p.as_str());
            }
            if let Some(p) = providers {
                body["providers"] = json!(split_list(&p));
            }
            if let Some(m) = allowed_models {
                body["allowed_models"] = json!(split_list(&m));
            }
            let v = c.json(Method::POST, "/v1/projects", Some(&body)).await?;
            emit_one(out, &v, PROJECT_FIELDS);
        }
        ProjectCmd::List => {
            let items = c.list("/v1/projects").await?;
            emit_list(
                out,
                &items,
                &["NAME", "ID", "BUDGET (USD)", "PERIOD", "PROVIDERS"],
                &["name", "id", "budget_usd", "period", "providers"],
            );
        }
        ProjectCmd::Show { name } => {
            let p = c.get(&format!("/v1/projects/{}", enc(&name))).await?;
            let b = c.get(&format!("/v1/budgets/{}", enc(&name))).await?;
            match out {
                OutputFormat::Json => {
                    let mut v = p;
                    v["budget"] = b;
                    print_json(&v);
                }
                OutputFormat::Table => {
                    let mut s = details(&p, PROJECT_FIELDS);
                    s.push_str(&details(
                        &b,
                        &[
                            ("spent (USD)", "spent_usd"),
                            ("leased (USD)", "leased_usd"),
                            ("remaining (USD)", "remaining_usd"),
                        ],
                    ));
                    print(&s);
                }
            }
        }
        ProjectCmd::SetLimits {
            name,
            rpm,
            tpm,
            clear,
        } => {
            let mut limits = serde_json::Map::new();
            for (key, value) in [("rpm", rpm), ("tpm", tpm)] {
                if value.is_some() || clear {
                    limits.insert(key.into(), json!(value));
                }
            }
            let v = c
                .json(
                    Method::PATCH,
                    &format!("/v1/projects/{}", enc(&name)),
                    Some(&json!({"rate_limits": limits})),
                )
                .await?;
            emit_one(out, &v, PROJECT_FIELDS);
        }
        ProjectCmd::SetBudget {
            name,
            usd,
            unlimited: _,
            period,
        } => {
            let mut body = json!({"budget_usd": usd});
            if let Some(p) = period {
                body["period"] = json!(p.as_str());
            }
            let v = c
                .json(
                    Method::PUT,
                    &format!("/v1/projects/{}/budget", enc(&name)),
                    Some(&body),
                )
                .await?;
            emit_one(out, &v, PROJECT_FIELDS);
        }
        ProjectCmd::SetPii {
            name,
            types,
            action,
            direction,
            reversible,
            policy,
            reset,
        } => {
            let mut p: PiiPolicy = match (&policy, reset) {
                (Some(json), _) => serde_json::from_str(json).map_err(|e| {
                    CliError::Input(format!("--policy is not a valid PII policy: {e}"))
                })?,
                (None, true) => PiiPolicy::default(),
                (None, false) => {
                    let current = c.get(&format!("/v1/projects/{}", enc(&name))).await?;
                    match current.get("pii") {
                        Some(v) if !v.is_null() => {
                            serde_json::from_value(v.clone()).map_err(|e| {
                                CliError::Other(format!(
                                    "control returned an unreadable PII policy: {e}"
                                ))
                            })?
                        }
                        _ => PiiPolicy::default(),
                    }
                }
            };
            if let Some(a) = action {
                let action: Action = a.parse().map_err(|_| {
                    CliError::Input(format!("--action `{a}`: expected redact, block or allow"))
                })?;
                let (req, resp) = match direction.as_str() {
                    "request" => (true, false),
                    "response" => (false, true),
                    "both" => (true, true),
                    other => {
                        return Err(CliError::Input(format!(
                            "--direction `{other}`: expected request, response or both"
                        )));
                    }
                };
                for t in &types {
                    let kind: PiiType = t.parse().map_err(|_| {
                        CliError::Input(format!("--type `{t}`: expected EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS or SECRET"))
                    })?;
                    if req {
                        p.request.set(kind, action);
                    }
                    if resp {
                        p.response.set(kind, action);
                    }
                }
            }
            if let Some(r) = reversible {
                p.reversible = r;
            }
            let v = c
                .json(
                    Method::PATCH,
                    &format!("/v1/projects/{}", enc(&name)),
                    Some(&json!({"pii": p})),
                )
                .await?;
            emit_one(out, &v, PROJECT_FIELDS);
        }
        ProjectCmd::Delete { name } => {
            let v = c
                .json(
                    Method::DELETE,
                    &format!("/v1/projects/{}", enc(&name)),
                    None,
                )
                .await?;
            match out {
                OutputFormat::Json => print_json(&v),
                OutputFormat::Table => {
                    print(&format!("deleted project {name} ({})\n", cell(&v["id"])))
                }
            }
        }
    }
    Ok(())
}

const TOKEN_FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("project", "project"),
    ("name", "name"),
    ("status", "status"),
    ("budget (USD)", "budget_usd"),
    ("created", "created_at"),
    ("expires", "expires_at"),
    ("revoked", "revoked_at"),
];

pub async fn token(c: &Client, out: OutputFormat, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Mint {
            project,
            name,
            budget_usd,
            ttl,
            rpm,
            tpm,
        } => {
            let mut body = json!({});
            if rpm.is_some() || tpm.is_some() {
                body["rate_limits"] = json!({"rpm": rpm, "tpm": tpm});
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(b) = budget_usd {
                body["budget_usd"] = json!(b);
            }
            if let Some(t) = ttl {
                body["ttl"] = json!(t);
            }
            let v = c
                .json(
                    Method::POST,
                    &format!("/v1/projects/{}/tokens", enc(&project)),
                    Some(&body),
                )
                .await?;
            match out {
                OutputFormat::Json => print_json(&json!({
                    "id": v["id"], "token": v["token"], "project": v["project"],
                    "expires_at": v["expires_at"], "project_name": v["project_name"], "name": v["name"],
                })),
                OutputFormat::Table => print(&format!(
                    "Minted {} for project {} (expires {}).\n{}\nStore it now: Iron does not keep it and will not show it again.\n",
                    cell(&v["id"]),
                    cell(&v["project_name"]),
                    cell(&v["expires_at"]),
                    cell(&v["token"]),
                )),
            }
        }
        TokenCmd::List { project } => {
            let path = match project {
                Some(p) => format!("/v1/tokens?project={}", enc(&p)),
                None => "/v1/tokens".into(),
            };
            let items = c.list(&path).await?;
            emit_list(
                out,
                &items,
                &["ID", "PROJECT", "NAME", "STATUS", "EXPIRES"],
                &["id", "project", "name", "status", "expires_at"],
            );
        }
        TokenCmd::Show { id } => {
            let v = c.get(&format!("/v1/tokens/{}", enc(&id))).await?;
            emit_one(out, &v, TOKEN_FIELDS);
        }
        TokenCmd::Revoke { id } => {
            let v = c
                .json(Method::DELETE, &format!("/v1/tokens/{}", enc(&id)), None)
                .await?;
            match out {
                OutputFormat::Json => print_json(&v),
                OutputFormat::Table => print(&format!("revoked {id}\n")),
            }
        }
    }
    Ok(())
}

pub async fn usage(c: &Client, out: OutputFormat, a: UsageArgs) -> Result<(), CliError> {
    let mut q = Vec::new();
    for (k, v) in [
        ("project", &a.project),
        ("token", &a.token),
        ("model", &a.model),
        ("since", &a.since),
        ("until", &a.until),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if a.csv {
        q.push("format=csv".into());
        let path = format!("/v1/usage?{}", q.join("&"));
        match c.send(Method::GET, &path, None).await? {
            Body::Text(t) => print(&t),
            Body::Json(v) => print_json(&v),
        }
        return Ok(());
    }
    let path = if q.is_empty() {
        "/v1/usage".to_owned()
    } else {
        format!("/v1/usage?{}", q.join("&"))
    };
    let items = c.list(&path).await?;
    emit_list(
        out,
        &items,
        &[
            "TIME",
            "PROJECT",
            "TOKEN",
            "MODEL",
            "IN",
            "OUT",
            "COST (USD)",
        ],
        &[
            "time",
            "project",
            "token",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
        ],
    );
    Ok(())
}

pub async fn pricing(c: &Client, out: OutputFormat, cmd: PricingCmd) -> Result<(), CliError> {
    match cmd {
        PricingCmd::List => {
            let items = c.list("/v1/pricing").await?;
            emit_list(
                out,
                &items,
                &["MODEL", "INPUT $/M", "CACHED $/M", "OUTPUT $/M", "SOURCE"],
                &[
                    "model",
                    "input_per_mtok_usd",
                    "cached_input_per_mtok_usd",
                    "output_per_mtok_usd",
                    "source",
                ],
            );
        }
        PricingCmd::Set {
            model,
            input_per_mtok,
            output_per_mtok,
            cached_input_per_mtok,
        } => {
            let mut body = json!({"input_per_mtok_usd": input_per_mtok, "output_per_mtok_usd": output_per_mtok});
            if let Some(ci) = cached_input_per_mtok {
                body["cached_input_per_mtok_usd"] = json!(ci);
            }
            let v = c
                .json(
                    Method::PUT,
                    &format!("/v1/pricing/{}", enc(&model)),
                    Some(&body),
                )
                .await?;
            emit_one(
                out,
                &v,
                &[
                    ("model", "model"),
                    ("input $/M", "input_per_mtok_usd"),
                    ("cached $/M", "cached_input_per_mtok_usd"),
                    ("output $/M", "output_per_mtok_usd"),
                ],
            );
        }
    }
    Ok(())
}

pub async fn api_key(c: &Client, out: OutputFormat, cmd: ApiKeyCmd) -> Result<(), CliError> {
    match cmd {
        ApiKeyCmd::Create { name, role } => {
            let v = c
                .json(
                    Method::POST,
                    "/v1/api-keys",
                    Some(&json!({"name": name, "role": role})),
                )
                .await?;
            match out {
                OutputFormat::Json => print_json(&v),
                OutputFormat::Table => print(&format!(
                    "Created API key {} ({}, role {}).\n{}\nStore it now: only its hash is kept.\n",
                    cell(&v["id"]),
                    cell(&v["name"]),
                    cell(&v["role"]),
                    cell(&v["key"])
                )),
            }
        }
        ApiKeyCmd::List => {
            let items = c.list("/v1/api-keys").await?;
            emit_list(
                out,
                &items,
                &["ID", "NAME", "ROLE", "CREATED"],
                &["id", "name", "role", "created_at"],
            );
        }
        ApiKeyCmd::Delete { id } => {
            let v = c
                .json(Method::DELETE, &format!("/v1/api-keys/{}", enc(&id)), None)
                .await?;
            match out {
                OutputFormat::Json => print_json(&v),
                OutputFormat::Table => print(&format!("deleted API key {id}\n")),
            }
        }
    }
    Ok(())
}

pub async fn audit(c: &Client, out: OutputFormat, a: AuditArgs) -> Result<(), CliError> {
    let mut q = Vec::new();
    for (k, v) in [
        ("project", &a.project),
        ("action", &a.action),
        ("actor", &a.actor),
        ("since", &a.since),
        ("until", &a.until),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if let Some(format) = a.format {
        q.push(format!(
            "format={}",
            match format {
                AuditFormat::Json => "json",
                AuditFormat::Csv => "csv",
            }
        ));
        if let Some(limit) = a.limit {
            q.push(format!("limit={limit}"));
        }
        let mut stdout = std::io::stdout().lock();
        return c
            .download(&format!("/v1/audit?{}", q.join("&")), &mut stdout)
            .await;
    }
    q.push(format!("limit={}", a.limit.unwrap_or(50).clamp(1, 500)));
    let v = c.get(&format!("/v1/audit?{}", q.join("&"))).await?;
    let items = v["data"].as_array().cloned().unwrap_or_default();
    emit_list(
        out,
        &items,
        &["TIME", "ACTOR", "ACTION", "TARGET", "PROJECT"],
        &["time", "actor", "action", "target", "project"],
    );
    Ok(())
}
