//! Where log lines go and how they look: text on stderr, coloured only on a terminal, or one
//! JSON object per line for log collectors (`--log-format json`, `EASEL_LOG_FORMAT=json`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` wins over `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour(std::io::stderr().is_terminal())).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// Colour codes only for a person at a terminal, and not for one who asked for none
/// (`NO_COLOR`, <https://no-color.org>): in files and pipes they are noise.
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
