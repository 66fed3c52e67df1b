//! Thin entry point: the program lives in the `kattila-receiver` library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kattila_receiver::cli::main(env!("KATTILA_VERSION"))
}
