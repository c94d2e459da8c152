//! The command line of `iron` (`design.md` §2). These forms are a contract: tests and docs
//! use them. Usage errors (unknown flags, missing arguments, bad enum values) exit with 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "iron",
    version,
    about = "Iron: an LLM egress proxy with budgets, PII redaction and tokens"
)]
pub struct Cli {
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Control service URL.
    #[arg(
        long,
        global = true,
        env = "IRON_CONTROL_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub control_url: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run control (embedded store) and the proxy in one process.
    Up(UpArgs),
    /// Provider deployments (upstream LLM APIs and their keys).
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// Projects: budgets, provider bindings.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// IC tokens for agents.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Usage events.
    Usage(UsageArgs),
    /// Model prices.
    #[command(subcommand)]
    Pricing(PricingCmd),
    /// Admin API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCmd),
    /// The audit log.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory (embedded store, master key, admin key).
    #[arg(long, default_value = ".iron")]
    pub data_dir: PathBuf,
    /// Proxy listen address (agents).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub proxy_listen: String,
    /// Control listen address (REST API).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub control_listen: String,
    /// Proxy admin listen address (/metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: String,
    /// Base URL for the providers registered from OPENAI_API_KEY / ANTHROPIC_API_KEY
    /// (default: the real provider URLs).
    #[arg(long)]
    pub upstream_base_url: Option<String>,
    /// The built Control Panel to serve at the control address (default: `dashboard/dist`
    /// of the Iron checkout this runs from, when it has been built).
    #[arg(long, env = "IRON_DASHBOARD_DIR")]
    pub dashboard_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Openai,
    Anthropic,
    OpenaiCompatible,
    AzureOpenai,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Openai => "openai",
            Kind::Anthropic => "anthropic",
            Kind::OpenaiCompatible => "openai-compatible",
            Kind::AzureOpenai => "azure-openai",
        }
    }
}

/// Where to read a provider key from (exactly one). Keys are never taken as arguments:
/// they would end up in shell history and process listings.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct KeySource {
    /// Read the key from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Read the key from this file.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Read the key from standard input.
    #[arg(long)]
    pub api_key_stdin: bool,
}

/// A deployment's own timeouts in milliseconds (1 to 600000); unset ones use the proxy's
/// `[upstream]` values.
#[derive(Debug, Args)]
pub struct TimeoutFlags {
    /// Connect (TCP + TLS) timeout in ms.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub connect_timeout_ms: Option<u64>,
    /// Time to the first response byte in ms (then 504 `upstream_timeout`).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest gap between body chunks in ms (a stream then ends with an error event).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub idle_timeout_ms: Option<u64>,
}

impl TimeoutFlags {
    /// The `timeouts` object of the request body, or `None` when no flag was given.
    pub fn body(&self) -> Option<serde_json::Value> {
        let mut t = serde_json::Map::new();
        for (k, v) in [
            ("connect_ms", self.connect_timeout_ms),
            ("first_byte_ms", self.first_byte_timeout_ms),
            ("idle_ms", self.idle_timeout_ms),
        ] {
            if let Some(ms) = v {
                t.insert(k.into(), ms.into());
            }
        }
        (!t.is_empty()).then_some(serde_json::Value::Object(t))
    }
}

#[derive(Debug, Subcommand)]
pub enum ProviderCmd {
    /// Register a provider deployment.
    Add {
        name: String,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        base_url: String,
        #[command(flatten)]
        key: KeySource,
        /// Comma-separated model glob patterns, e.g. 'gpt-4o*,o3*' (default '*').
        #[arg(long)]
        models: Option<String>,
        /// Higher wins among healthy deployments (default 0).
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        #[command(flatten)]
        timeouts: TimeoutFlags,
    },
    /// Change a provider's base URL, models, priority or timeouts (unset flags keep
    /// their value).
    ///
    /// `iron provider update openai --first-byte-timeout-ms 20000` · `iron provider update openai --clear-timeouts`
    #[command(group(clap::ArgGroup::new("changes").required(true).multiple(true)
        .args(["base_url", "models", "priority", "connect_timeout_ms", "first_byte_timeout_ms",
               "idle_timeout_ms", "clear_timeouts"])))]
    Update {
        name: String,
        #[arg(long)]
        base_url: Option<String>,
        /// Comma-separated model glob patterns ('' = all).
        #[arg(long)]
        models: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        #[command(flatten)]
        timeouts: TimeoutFlags,
        /// Remove all three timeouts (the proxy's `[upstream]` values apply again).
        #[arg(long, conflicts_with_all = ["connect_timeout_ms", "first_byte_timeout_ms", "idle_timeout_ms"])]
        clear_timeouts: bool,
    },
    /// List providers (keys masked).
    List,
    /// Show one provider.
    Show { name: String },
    /// Replace a provider's key.
    RotateKey {
        name: String,
        #[command(flatten)]
        key: KeySource,
    },
    /// Delete a provider.
    Remove { name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Period {
    Total,
    Daily,
    Monthly,
}

impl Period {
    pub const fn as_str(self) -> &'static str {
        match self {
            Period::Total => "total",
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project.
    Create {
        name: String,
        /// Budget limit in USD (omitted = unlimited).
        #[arg(long, allow_negative_numbers = true)]
        budget_usd: Option<String>,
        #[arg(long, value_enum)]
        period: Option<Period>,
        /// Comma-separated provider names or ids (default: all).
        #[arg(long)]
        providers: Option<String>,
        /// Comma-separated allowed model patterns (default: all).
        #[arg(long)]
        allowed_models: Option<String>,
    },
    /// List projects.
    List,
    /// Show a project and its budget status.
    Show { name: String },
    /// Set a project's budget.
    SetBudget {
        name: String,
        /// New limit in USD.
        #[arg(
            long,
            required_unless_present = "unlimited",
            conflicts_with = "unlimited",
            allow_negative_numbers = true
        )]
        usd: Option<String>,
        /// Remove the limit.
        #[arg(long)]
        unlimited: bool,
        #[arg(long, value_enum)]
        period: Option<Period>,
    },
    /// Set a project's PII policy (design.md §7): an action per type and direction.
    ///
    /// `iron project set-pii demo --type EMAIL --type US_SSN --action block --direction request`
    SetPii {
        name: String,
        /// PII type: EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS, SECRET (repeatable).
        #[arg(long = "type", requires = "action")]
        types: Vec<String>,
        /// redact | block | allow
        #[arg(long)]
        action: Option<String>,
        /// request | response | both
        #[arg(long, default_value = "both")]
        direction: String,
        /// true: placeholders restored in answers; false: `[REDACTED:TYPE]`.
        #[arg(long)]
        reversible: Option<bool>,
        /// The whole policy as JSON (instead of --type/--action).
        #[arg(long, conflicts_with_all = ["types", "action", "reset"])]
        policy: Option<String>,
        /// Back to the default (redact every type both ways, reversibly).
        #[arg(long, conflicts_with_all = ["types", "action"])]
        reset: bool,
    },
    /// Set a project's rate limits (requests / tokens per minute; the stricter of the
    /// project's and the token's own applies).
    ///
    /// `iron project set-limits demo --rpm 600 --tpm 100000` · `iron project set-limits demo --clear`
    #[command(group(clap::ArgGroup::new("limits").required(true).multiple(true).args(["rpm", "tpm", "clear"])))]
    SetLimits {
        name: String,
        /// Requests per minute (1 or more).
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens (input + output) per minute (1 or more).
        #[arg(long)]
        tpm: Option<u64>,
        /// Remove the limits not given with --rpm/--tpm (alone: remove both).
        #[arg(long)]
        clear: bool,
    },
    /// Delete a project (its tokens are revoked).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Mint an IC token (printed once).
    Mint {
        #[arg(long)]
        project: String,
        #[arg(long)]
        name: Option<String>,
        /// The token's own budget in USD.
        #[arg(long, allow_negative_numbers = true)]
        budget_usd: Option<String>,
        /// Lifetime such as 30m, 12h, 7d (default 30d).
        #[arg(long)]
        ttl: Option<String>,
        /// The token's own requests-per-minute limit (carried in the token).
        #[arg(long)]
        rpm: Option<u64>,
        /// The token's own tokens-per-minute limit (carried in the token).
        #[arg(long)]
        tpm: Option<u64>,
    },
    /// List tokens (metadata only).
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Show a token's metadata.
    Show { id: String },
    /// Revoke a token.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub token: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    /// RFC 3339 time or a duration ago, e.g. 24h.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Subcommand)]
pub enum PricingCmd {
    /// List model prices (USD per million tokens).
    List,
    /// Override a model's price.
    Set {
        model: String,
        /// USD per million input tokens.
        #[arg(long)]
        input_per_mtok: String,
        /// USD per million output tokens.
        #[arg(long)]
        output_per_mtok: String,
        /// USD per million cached input tokens.
        #[arg(long)]
        cached_input_per_mtok: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCmd {
    /// Create an API key (printed once).
    Create {
        name: String,
        /// admin, viewer or project:<name>.
        #[arg(long)]
        role: String,
    },
    List,
    Delete {
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub project: Option<String>,
    /// e.g. project.create, token.revoke, session.create.
    #[arg(long)]
    pub action: Option<String>,
    /// API key id (`session:<key id>` for dashboard sessions).
    #[arg(long)]
    pub actor: Option<String>,
    /// RFC 3339 time or a duration ago, e.g. 1h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 time or a duration ago (exclusive).
    #[arg(long)]
    pub until: Option<String>,
    /// Export every matching event to stdout as a JSON array or CSV (streamed, at most
    /// --limit events, default 100000) instead of a table of the newest.
    #[arg(long, value_enum)]
    pub format: Option<AuditFormat>,
    /// Most events shown (default 50; with --format, the export cap).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Json,
    Csv,
}
