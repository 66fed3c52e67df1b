//! Thin entry point: the program lives in the `kattila-agent` library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kattila_agent::cli::main(env!("KATTILA_VERSION"))
}
