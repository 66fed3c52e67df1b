//! Logging setup shared by the programs that fetch keys.

/// Sets up logging to stderr for a program that fetches keys: `RUST_LOG`
/// overrides the default `info`, but the DNS libraries are held at WARN
/// whatever it says, because at DEBUG they print TXT answers — the key.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = ["hickory_net=warn", "hickory_resolver=warn", "hickory_proto=warn"]
        .into_iter()
        .fold(filter, |f, d| f.add_directive(d.parse().expect("valid directive")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
