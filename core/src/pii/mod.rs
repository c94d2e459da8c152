//! PII engine (§7). Placeholder until the engine lands.
