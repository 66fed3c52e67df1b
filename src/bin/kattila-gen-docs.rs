//! Writes the man pages and shell completions of the Kattila programs from
//! their clap definitions, so they always list the flags the binaries built
//! from the same checkout have:
//!
//!   kattila-gen-docs PREFIX PROGRAM...     (PROGRAM: kattila-agent, kattila-receiver, sitegen)
//!
//! Files land where Debian looks for them under PREFIX (e.g. `stage/usr`):
//! `share/man/man8/` (uncompressed; the packager compresses),
//! `share/bash-completion/completions/`, `share/zsh/vendor-completions/`,
//! `share/fish/vendor_completions.d/`. Used by scripts/build-packages.sh;
//! built only with `--features gen-docs`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Daemons and administration tools: section 8.
const SECTION: &str = "8";

const PROGRAMS: [&str; 3] = ["kattila-agent", "kattila-receiver", "sitegen"];

fn command(program: &str) -> Option<clap::Command> {
    let cmd = match program {
        "kattila-agent" => kattila_agent::cli::Args::command(),
        "kattila-receiver" => kattila_receiver::cli::Args::command(),
        "sitegen" => kattila_sitegen::cli::Args::command(),
        _ => return None,
    };
    Some(cmd.version(env!("KATTILA_VERSION")))
}

/// Man pages referring to the other programs of the system.
fn see_also(program: &str) -> String {
    PROGRAMS
        .iter()
        .filter(|p| **p != program)
        .map(|p| format!("{p}({SECTION})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The NAME line of a man page wants a short phrase: the first sentence of
/// the command's `about`, without a leading "program:". The whole text
/// stays in DESCRIPTION (`long_about`).
fn short_about(cmd: clap::Command) -> clap::Command {
    let Some(about) = cmd.get_about().map(|a| a.to_string()) else {
        return cmd;
    };
    let long = cmd.get_long_about().map(|a| a.to_string()).unwrap_or_else(|| about.clone());
    let name = cmd.get_name().to_string();
    let short = about.strip_prefix(&format!("{name}: ")).unwrap_or(&about);
    let short = short.split(". ").next().unwrap_or(short).trim_end_matches('.').to_string();
    cmd.about(short).long_about(long)
}

/// One man page per command and subcommand (`kattila-agent-simulate.8`).
fn man_pages(cmd: clap::Command, program: &str, dir: &Path) -> Result<(), String> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pending = vec![cmd];
    while let Some(cmd) = pending.pop() {
        pending.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        // Subcommands have no version of their own: name the program's.
        let man = clap_mangen::Man::new(short_about(cmd))
            .section(SECTION)
            .manual("Kattila")
            .source(format!("{program} {}", env!("KATTILA_VERSION")));
        let mut page = Vec::new();
        man.render(&mut page).expect("writing to memory");
        let mut roff = clap_mangen::roff::Roff::new();
        roff.control("SH", ["SEE ALSO"]).text([clap_mangen::roff::roman(see_also(program))]);
        // Without the apostrophe preamble, which the page already has.
        page.extend(roff.to_roff().into_bytes());
        write(&dir.join(man.get_filename()), &page)?;
    }
    Ok(())
}

fn completions(cmd: &mut clap::Command, program: &str, prefix: &Path) -> Result<(), String> {
    let targets = [
        (Shell::Bash, "share/bash-completion/completions", program.to_string()),
        (Shell::Zsh, "share/zsh/vendor-completions", format!("_{program}")),
        (Shell::Fish, "share/fish/vendor_completions.d", format!("{program}.fish")),
    ];
    for (shell, dir, name) in targets {
        let mut text = Vec::new();
        clap_complete::generate(shell, cmd, program, &mut text);
        write(&prefix.join(dir).join(name), &text)?;
    }
    Ok(())
}

fn write(path: &Path, content: &[u8]) -> Result<(), String> {
    std::fs::write(path, content).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn run(prefix: &Path, programs: &[String]) -> Result<(), String> {
    let man_dir = prefix.join(format!("share/man/man{SECTION}"));
    for dir in [
        man_dir.clone(),
        prefix.join("share/bash-completion/completions"),
        prefix.join("share/zsh/vendor-completions"),
        prefix.join("share/fish/vendor_completions.d"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    for program in programs {
        let Some(cmd) = command(program) else {
            return Err(format!("unknown program {program:?} (one of: {})", PROGRAMS.join(", ")));
        };
        // Completions first build the command with a `help` subcommand,
        // which gets no man page: they work on a copy.
        completions(&mut cmd.clone(), program, prefix)?;
        man_pages(cmd, program, &man_dir)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((prefix, programs)) = args.split_first().filter(|(_, p)| !p.is_empty()) else {
        eprintln!("usage: kattila-gen-docs PREFIX PROGRAM...   (PROGRAM: {})", PROGRAMS.join(", "));
        return ExitCode::from(2);
    };
    match run(&PathBuf::from(prefix), programs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kattila-gen-docs: error: {e}");
            ExitCode::FAILURE
        }
    }
}
