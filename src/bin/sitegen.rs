//! Thin entry point: the program lives in the `kattila-sitegen` library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kattila_sitegen::cli::main(env!("KATTILA_VERSION"))
}
