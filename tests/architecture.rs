//! The rules of ARCHITECTURE.md that a machine can check, as ordinary tests
//! (after rust-analyzer's `tidy` tests): a rule written only in prose
//! decays, a rule in a test holds. Each test names the rule, why it exists,
//! and every crate, file and line that breaks it.
//!
//! The crate graph comes from `cargo metadata --no-deps`; the source rules
//! read the files under each crate's `src/` with comments and string
//! literals told apart from code by a small lexer (no parser: the rules
//! look for names and literals, not for types).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The three programs. Each runs alone on its own machine and shares only
/// the wire format (kattila-proto) and the database with the others.
const PROGRAMS: &[&str] = &["kattila-agent", "kattila-receiver", "kattila-sitegen"];

/// The one crate that holds SQL.
const STORE: &str = "kattila-store";

const PROTO: &str = "kattila-proto";
const SITEGEN: &str = "kattila-sitegen";

/// Rule a: no program crate depends on another, dev-dependencies included,
/// directly or through another workspace crate.
#[test]
fn no_program_crate_depends_on_another() {
    let ws = Workspace::load();
    let mut bad = Vec::new();
    for &program in PROGRAMS {
        let Some(pkg) = ws.package(program) else { continue };
        // Any kind of dependency of the program itself counts (its tests
        // and benches are built with its dev-dependencies); a dependency's
        // own dev-dependencies are not built with it.
        for path in ws.reachable(pkg, &[Kind::Normal, Kind::Build, Kind::Dev]) {
            let last = path.last().expect("a path has a dependency");
            if PROGRAMS.contains(&last.to.as_str()) && last.to != program {
                bad.push(ws.describe(&path));
            }
        }
    }
    report(
        "no program crate depends on another, not even as a dev-dependency",
        "the agent, the receiver and sitegen run alone, on different machines; they share only \
         the wire format (kattila-proto) and the database (the storage crate). A dependency \
         between two of them, even for tests or benches, draws a pipeline that does not exist \
         at run time and couples their builds. Test and bench code that needs two programs \
         lives in the root package (tests/, benches/); fixtures go through the storage crate \
         or kattila-testsupport.",
        bad,
    );
}

/// Rule b, dependencies: kattila-proto links no crate that does I/O.
#[test]
fn proto_depends_on_no_io_crate() {
    let ws = Workspace::load();
    let proto = ws.package(PROTO).expect("kattila-proto is a workspace member");
    let forbidden = |name: &str| {
        [
            "tokio",
            "mio",
            "socket2",
            "reqwest",
            "hyper",
            "hyper-util",
            "axum",
            "rusqlite",
            "notify",
            "rustix",
            "nix",
            "tempfile",
        ]
        .contains(&name)
            || name.starts_with("hickory-")
            || name.starts_with("trust-dns-")
    };
    // What the library links: normal and build dependencies, followed
    // through workspace crates. Its tests (dev-dependencies) may read files.
    let bad = ws
        .reachable(proto, &[Kind::Normal, Kind::Build])
        .into_iter()
        .filter(|path| forbidden(&path.last().expect("a path has a dependency").to))
        .map(|path| ws.describe(&path))
        .collect();
    report(
        "kattila-proto depends on no crate that does I/O",
        "the wire format is pure: callers pass bytes, keys and the time. That keeps \
         verification testable without the world and lets every program (and the tests) use \
         exactly the same code.",
        bad,
    );
}

/// Rule b, source: kattila-proto's own code touches no file, socket,
/// process, environment, terminal or clock.
#[test]
fn proto_source_does_no_io() {
    let ws = Workspace::load();
    let proto = ws.package(PROTO).expect("kattila-proto is a workspace member");
    let mut bad = Vec::new();
    for file in rust_files(&proto.dir.join("src")) {
        let lexed = Lexed::read(&file);
        for (line, what) in io_uses(&lexed.code) {
            bad.push(format!("{}:{line}: {what}", ws.relative(&file)));
        }
    }
    report(
        "kattila-proto's src/ does no I/O (no std::fs, sockets, std::process, std::env, \
         stdin/stdout/stderr, printing, SystemTime::now or Instant::now)",
        "the wire format is pure: callers pass bytes, keys and the time. Parsing addresses \
         (std::net::IpAddr, SocketAddr) is not I/O and is allowed.",
        bad,
    );
}

/// Rule c: sitegen links no HTTP or DNS crate.
#[test]
fn sitegen_depends_on_no_http_or_dns_crate() {
    let ws = Workspace::load();
    let sitegen = ws.package(SITEGEN).expect("kattila-sitegen is a workspace member");
    let forbidden = |name: &str| {
        [
            "reqwest",
            "hyper",
            "hyper-util",
            "h2",
            "axum",
            "ureq",
            "curl",
            "isahc",
            "attohttpc",
            "surf",
            "kattila-keysource",
        ]
        .contains(&name)
            || name.starts_with("hickory-")
            || name.starts_with("trust-dns-")
    };
    // What the sitegen program links, followed through workspace crates.
    // Its tests build fixture databases and may use other crates; they do
    // not ship.
    let bad = ws
        .reachable(sitegen, &[Kind::Normal, Kind::Build])
        .into_iter()
        .filter(|path| forbidden(&path.last().expect("a path has a dependency").to))
        .map(|path| ws.describe(&path))
        .collect();
    report(
        "sitegen depends on no HTTP or DNS crate (reqwest, hyper, axum, hickory-*, \
         kattila-keysource, …)",
        "sitegen builds the dashboard from the database alone and makes no network calls \
         (only `git push` when asked, through git): the published site cannot leak what a \
         request would carry, and a build works offline.",
        bad,
    );
}

/// Rule d: SQL only in the storage crate.
#[test]
fn sql_lives_only_in_the_storage_crate() {
    let ws = Workspace::load();
    let mut bad = Vec::new();
    for pkg in &ws.packages {
        if pkg.name == STORE || ws.test_only(pkg) {
            continue;
        }
        for file in rust_files(&pkg.dir.join("src")) {
            for (line, text) in Lexed::read(&file).strings {
                if let Some(what) = sql_in(&text) {
                    bad.push(format!("{}:{line}: {} ({what})", ws.relative(&file), excerpt(&text)));
                }
            }
        }
    }
    report(
        "SQL lives only in the storage crate (kattila-store)",
        "the schema is the contract between the receiver, which writes the database, and \
         sitegen, which reads it; with every statement in one crate a schema change is made \
         and reviewed in one place. Tests, benches and test-only crates (used only as \
         dev-dependencies) may query a database to check results.",
        bad,
    );
}

/// Rule e: every source file opens with a module comment saying what it is.
#[test]
fn every_source_file_starts_with_a_module_comment() {
    let ws = Workspace::load();
    let mut bad = Vec::new();
    for pkg in &ws.packages {
        for file in rust_files(&pkg.dir.join("src")) {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            if !text.starts_with("//!") {
                bad.push(format!("{}:1: no `//!` module comment", ws.relative(&file)));
            }
        }
    }
    report(
        "every .rs file under a crate's src/ starts with a `//!` module comment",
        "the code map in ARCHITECTURE.md names modules; the module comment is where a reader \
         (and rustdoc) learns what a file is for before reading it.",
        bad,
    );
}

/// Rule f: inside a program crate, no two modules use each other: the
/// dependencies between modules go one way, so each can be read (and
/// changed) knowing only those below it.
#[test]
fn no_two_modules_of_a_program_use_each_other() {
    let ws = Workspace::load();
    let mut bad = Vec::new();
    for pkg in ws.packages.iter().filter(|p| PROGRAMS.contains(&p.name.as_str())) {
        let src = pkg.dir.join("src");
        // A module is a file or directory right under src/ (lib.rs and the
        // binaries' mains are the crate's root, which may use anything).
        let module_of = |file: &Path| -> Option<String> {
            let rel = file.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
            let name = first.trim_end_matches(".rs").to_string();
            (!matches!(name.as_str(), "lib" | "main" | "bin")).then_some(name)
        };
        let files = rust_files(&src);
        let modules: std::collections::BTreeSet<String> =
            files.iter().filter_map(|f| module_of(f)).collect();
        let mut uses: std::collections::BTreeMap<(String, String), String> = Default::default();
        for file in &files {
            let Some(from) = module_of(file) else { continue };
            let code = Lexed::read(file).code;
            let mut at = 0;
            while let Some(p) = find_word(&code, "crate", at) {
                at = p + 5;
                let mut end = code.len().min(at + 200);
                while !code.is_char_boundary(end) {
                    end -= 1;
                }
                let rest = squeeze_paths(&code[at..end]);
                let Some(path) = rest.strip_prefix("::") else { continue };
                let target: String = path.chars().take_while(|&c| is_ident(c)).collect();
                if target != from && modules.contains(&target) {
                    let line = code[..p].matches('\n').count() + 1;
                    uses.entry((from.clone(), target))
                        .or_insert_with(|| format!("{}:{line}", ws.relative(file)));
                }
            }
        }
        for ((a, b), place) in &uses {
            if a < b {
                if let Some(back) = uses.get(&(b.clone(), a.clone())) {
                    bad.push(format!("{place}: {a} uses {b}, and {back}: {b} uses {a}"));
                }
            }
        }
    }
    report(
        "no two modules of a program crate use each other",
        "module dependencies that go one way let a reader understand a module from those below \
         it; a cycle means two modules are one job split in two, or a type in the wrong place.",
        bad,
    );
}

/// Fails with the rule, its reason and every violation, one per line.
fn report(rule: &str, why: &str, mut bad: Vec<String>) {
    if bad.is_empty() {
        return;
    }
    // By file, then by line number (not as text: 32 before 261).
    let key = |b: &String| {
        let mut parts = b.splitn(3, ':');
        let file = parts.next().unwrap_or("").to_string();
        let line = parts.next().and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        (file, line, b.clone())
    };
    bad.sort_by_key(key);
    bad.dedup();
    let mut msg = format!("\nrule broken: {rule}\nwhy: {why}\n\n");
    for b in &bad {
        let _ = writeln!(msg, "  {b}");
    }
    let _ = write!(msg, "\n{} violation(s)", bad.len());
    panic!("{msg}");
}

// ---------------------------------------------------------------------------
// The crate graph.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Normal => "dependency",
            Kind::Build => "build-dependency",
            Kind::Dev => "dev-dependency",
        }
    }
}

struct Dep {
    name: String,
    kind: Kind,
}

struct Package {
    name: String,
    dir: PathBuf,
    manifest: PathBuf,
    deps: Vec<Dep>,
}

/// One edge of a dependency path.
#[derive(Clone)]
struct Edge {
    from: String,
    to: String,
    kind: Kind,
}

struct Workspace {
    root: PathBuf,
    packages: Vec<Package>,
}

impl Workspace {
    fn load() -> Workspace {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
            .arg("--manifest-path")
            .arg(&manifest)
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
        let root = PathBuf::from(meta["workspace_root"].as_str().expect("workspace_root"));
        let members: Vec<&str> = meta["workspace_members"]
            .as_array()
            .expect("workspace_members")
            .iter()
            .map(|m| m.as_str().expect("a member id"))
            .collect();
        let packages = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .filter(|p| members.contains(&p["id"].as_str().expect("a package id")))
            .map(|p| {
                let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest_path"));
                let deps = p["dependencies"]
                    .as_array()
                    .expect("dependencies")
                    .iter()
                    .map(|d| Dep {
                        name: d["name"].as_str().expect("a dependency name").to_string(),
                        kind: match d["kind"].as_str() {
                            None => Kind::Normal,
                            Some("build") => Kind::Build,
                            Some("dev") => Kind::Dev,
                            Some(other) => panic!("unknown dependency kind {other}"),
                        },
                    })
                    .collect();
                Package {
                    name: p["name"].as_str().expect("a package name").to_string(),
                    dir: manifest.parent().expect("a manifest has a directory").to_path_buf(),
                    manifest,
                    deps,
                }
            })
            .collect();
        Workspace { root, packages }
    }

    fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// Every dependency path from `start`: its own dependencies of the
    /// given kinds, then, through workspace members, their normal and build
    /// dependencies (a dependency's dev-dependencies are not built with
    /// it). Each crate is reached once, by a shortest path.
    fn reachable(&self, start: &Package, kinds: &[Kind]) -> Vec<Vec<Edge>> {
        let mut seen = BTreeMap::<String, Vec<Edge>>::new();
        let mut queue = VecDeque::new();
        queue.push_back((start, Vec::<Edge>::new()));
        while let Some((pkg, path)) = queue.pop_front() {
            let allowed: &[Kind] =
                if path.is_empty() { kinds } else { &[Kind::Normal, Kind::Build] };
            for dep in pkg.deps.iter().filter(|d| allowed.contains(&d.kind)) {
                if dep.name == start.name || seen.contains_key(&dep.name) {
                    continue;
                }
                let mut next = path.clone();
                next.push(Edge { from: pkg.name.clone(), to: dep.name.clone(), kind: dep.kind });
                seen.insert(dep.name.clone(), next.clone());
                if let Some(member) = self.package(&dep.name) {
                    queue.push_back((member, next));
                }
            }
        }
        seen.into_values().collect()
    }

    /// `receiver/Cargo.toml:41: kattila-receiver → kattila-agent
    /// (dev-dependency)`, with every hop of a longer path.
    fn describe(&self, path: &[Edge]) -> String {
        let first = &path[0];
        let manifest = &self.package(&first.from).expect("a workspace member").manifest;
        let mut out = format!(
            "{}:{}: {}",
            self.relative(manifest),
            manifest_line(manifest, &first.to),
            first.from
        );
        for edge in path {
            let _ = write!(out, " → {} ({})", edge.to, edge.kind.describe());
        }
        out
    }

    /// True for a crate that every workspace member depending on it uses
    /// only as a dev-dependency (kattila-testsupport): it is test code.
    fn test_only(&self, pkg: &Package) -> bool {
        let kinds: Vec<Kind> = self
            .packages
            .iter()
            .flat_map(|p| &p.deps)
            .filter(|d| d.name == pkg.name)
            .map(|d| d.kind)
            .collect();
        !kinds.is_empty() && kinds.iter().all(|k| *k == Kind::Dev)
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }
}

/// The line of `manifest` that declares `dep` (0 if none is found, e.g. a
/// renamed dependency).
fn manifest_line(manifest: &Path, dep: &str) -> usize {
    let text = std::fs::read_to_string(manifest).expect("read a manifest");
    text.lines()
        .position(|l| {
            l.trim_start().strip_prefix(dep).is_some_and(|rest| rest.starts_with([' ', '.', '=']))
        })
        .map_or(0, |i| i + 1)
}

// ---------------------------------------------------------------------------
// Source files.

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A source file split into code and string literals. `code` is the file
/// with every comment and literal blanked out (newlines kept, so a byte's
/// line is still its line); `strings` holds each string literal's text as
/// written (escapes not undone) with the line it starts on.
struct Lexed {
    code: String,
    strings: Vec<(usize, String)>,
}

impl Lexed {
    fn read(path: &Path) -> Lexed {
        Lexed::new(&std::fs::read_to_string(path).expect("read a source file"))
    }

    fn new(src: &str) -> Lexed {
        let s: Vec<char> = src.chars().collect();
        let at = |i: usize| s.get(i).copied().unwrap_or('\0');
        let mut code = String::with_capacity(src.len());
        let mut strings = Vec::new();
        let mut line = 1;
        // Blanks s[from..to] in `code`, keeping newlines.
        let blank = |code: &mut String, line: &mut usize, from: usize, to: usize| {
            for &c in &s[from..to.min(s.len())] {
                if c == '\n' {
                    *line += 1;
                    code.push('\n');
                } else {
                    code.push(' ');
                }
            }
        };
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            let prev_ident = i > 0 && is_ident(s[i - 1]);
            if c == '/' && at(i + 1) == '/' {
                let end = s[i..].iter().position(|&c| c == '\n').map_or(s.len(), |p| i + p);
                blank(&mut code, &mut line, i, end);
                i = end;
            } else if c == '/' && at(i + 1) == '*' {
                let (mut j, mut depth) = (i + 2, 1);
                while j < s.len() && depth > 0 {
                    if s[j] == '/' && at(j + 1) == '*' {
                        depth += 1;
                        j += 2;
                    } else if s[j] == '*' && at(j + 1) == '/' {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut code, &mut line, i, j);
                i = j;
            } else if c == '"' {
                let mut j = i + 1;
                while j < s.len() && s[j] != '"' {
                    j += if s[j] == '\\' { 2 } else { 1 };
                }
                strings.push((line, s[i + 1..j.min(s.len())].iter().collect()));
                blank(&mut code, &mut line, i, j + 1);
                i = j + 1;
            } else if !prev_ident
                && (c == 'r' || (matches!(c, 'b' | 'c') && at(i + 1) == 'r'))
                && raw_string_start(&s, if c == 'r' { i + 1 } else { i + 2 }).is_some()
            {
                let open = if c == 'r' { i + 1 } else { i + 2 };
                let hashes = raw_string_start(&s, open).expect("checked above");
                let body = open + hashes + 1;
                let mut j = body;
                while j < s.len() && !(s[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#')) {
                    j += 1;
                }
                strings.push((line, s[body..j.min(s.len())].iter().collect()));
                blank(&mut code, &mut line, i, j + 1 + hashes);
                i = j + 1 + hashes;
            } else if c == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
                // A character literal ('"' must not open a string); a
                // lifetime or label ('a) has no closing quote and stays code.
                let mut j = i + 1;
                while j < s.len() && s[j] != '\'' {
                    j += if s[j] == '\\' { 2 } else { 1 };
                }
                blank(&mut code, &mut line, i, j + 1);
                i = j + 1;
            } else {
                if c == '\n' {
                    line += 1;
                }
                code.push(c);
                i += 1;
            }
        }
        Lexed { code, strings }
    }
}

/// If a raw string's quote follows `#`s from `i` on, the number of `#`s.
fn raw_string_start(s: &[char], i: usize) -> Option<usize> {
    let hashes = s[i.min(s.len())..].iter().take_while(|&&c| c == '#').count();
    (s.get(i + hashes) == Some(&'"')).then_some(hashes)
}

/// I/O in code (comments and literals already blanked): `(line, what)`.
fn io_uses(code: &str) -> Vec<(usize, String)> {
    // Paths, matched in `use` trees (flattened) and in code.
    const PATHS: &[&str] = &[
        "std::fs",
        "std::process",
        "std::env",
        "std::net::TcpStream",
        "std::net::TcpListener",
        "std::net::UdpSocket",
        "std::net::ToSocketAddrs",
        "std::io::stdin",
        "std::io::stdout",
        "std::io::stderr",
        "std::io::Stdin",
        "std::io::Stdout",
        "std::io::Stderr",
        "std::os::unix::net",
        "SystemTime::now",
        "Instant::now",
    ];
    // Names that mean I/O wherever they are used.
    const NAMES: &[&str] = &[
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "ToSocketAddrs",
        "to_socket_addrs",
        "stdin",
        "stdout",
        "stderr",
        "print!",
        "println!",
        "eprint!",
        "eprintln!",
        "dbg!",
    ];
    let line_of = |text: &str, offset: usize| text[..offset].matches('\n').count() + 1;
    let mut found = Vec::new();
    // `use` items, flattened: `use std::{fs, io::{self, stdin}};` names
    // std::fs, std::io::self and std::io::stdin.
    let mut from = 0;
    while let Some(p) = find_word(code, "use", from) {
        let end = code[p..].find(';').map_or(code.len(), |e| p + e);
        for path in flatten_use(&code[p + 3..end]) {
            let path = path.trim_start_matches("::");
            if PATHS.iter().any(|f| path == *f || path.starts_with(&format!("{f}::"))) {
                found.push((line_of(code, p), format!("use {path}")));
            }
        }
        from = end;
    }
    // Paths in code, with `std :: fs` read as `std::fs`.
    let code = squeeze_paths(code);
    for &f in PATHS {
        let mut at = 0;
        while let Some(p) = code[at..].find(f) {
            let p = at + p;
            let whole =
                !code[..p].ends_with(is_ident) && !code[p + f.len()..].starts_with(is_ident);
            if whole {
                found.push((line_of(&code, p), f.to_string()));
            }
            at = p + f.len();
        }
    }
    for &name in NAMES {
        let word = name.trim_end_matches('!');
        let mut at = 0;
        while let Some(p) = find_word(&code, word, at) {
            let after = &code[p + word.len()..];
            if !name.ends_with('!') || after.trim_start().starts_with('!') {
                found.push((line_of(&code, p), name.to_string()));
            }
            at = p + word.len();
        }
    }
    found.sort();
    found.dedup();
    found
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `code` without the spaces and tabs around `::` (newlines stay, so lines
/// keep their numbers).
fn squeeze_paths(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(c) = rest.chars().next() {
        if c == ' ' || c == '\t' {
            let blank = rest.len() - rest.trim_start_matches([' ', '\t']).len();
            let next = &rest[blank..];
            if !(out.ends_with("::") || next.starts_with("::")) {
                out.push_str(&rest[..blank]);
            }
            rest = next;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The next occurrence of `word` as a whole identifier at or after `from`.
fn find_word(text: &str, word: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(p) = text[at..].find(word) {
        let p = at + p;
        let before = text[..p].chars().next_back();
        let after = text[p + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(p);
        }
        at = p + word.len();
    }
    None
}

/// The paths of a `use` tree: `std::{fs, io::{self, stdin as input}}` →
/// `std::fs`, `std::io::self`, `std::io::stdin` (renames dropped, `self`
/// kept: it still starts with the module's path).
fn flatten_use(tree: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut words = tree.split_whitespace();
    while let Some(w) = words.next() {
        if w == "as" {
            // The new name goes, the punctuation after it stays.
            plain.push_str(words.next().unwrap_or("").trim_start_matches(is_ident));
        } else {
            plain.push_str(w);
        }
    }
    let mut out = Vec::new();
    flatten_into("", &plain, &mut out);
    out
}

fn flatten_into(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        if !tree.is_empty() {
            out.push(format!("{prefix}{tree}"));
        }
        return;
    };
    let prefix = format!("{prefix}{}", &tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                flatten_into(&prefix, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    flatten_into(&prefix, &inner[start..], out);
}

/// The SQL statement a string literal holds, if any: which pattern matched.
fn sql_in(literal: &str) -> Option<&'static str> {
    // A one-word statement only in capitals: "commit" is also git's.
    let statement = literal.trim().trim_end_matches(';').trim_end();
    let one_word = ["BEGIN", "COMMIT", "ROLLBACK", "END", "VACUUM", "ANALYZE"];
    if one_word.iter().any(|w| statement == *w || statement == format!("{w} TRANSACTION")) {
        return Some("a one-word statement");
    }
    // Words and single punctuation marks, lower case; escapes (\n, \t, a
    // backslash-newline continuation) are separators like spaces.
    let text = literal.replace("\\n", " ").replace("\\t", " ").replace("\\\"", "\"");
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() && c != '\\' {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let t = |i: usize| tokens.get(i).map_or("", String::as_str);
    let ident =
        |i: usize| t(i).chars().next().is_some_and(|c| c.is_alphabetic() || c == '_' || c == '"');
    for i in 0..tokens.len() {
        let found = match t(i) {
            // SELECT … FROM name (also inside WITH and INSERT … SELECT).
            "select"
                if tokens[i + 1..]
                    .iter()
                    .position(|w| w == "from")
                    .is_some_and(|f| ident(i + 2 + f)) =>
            {
                Some("SELECT … FROM")
            }
            // INSERT [OR REPLACE|IGNORE|…] INTO name.
            "insert"
                if (t(i + 1) == "into" && ident(i + 2))
                    || (t(i + 1) == "or" && t(i + 3) == "into") =>
            {
                Some("INSERT INTO")
            }
            "replace" if t(i + 1) == "into" && ident(i + 2) && t(i.wrapping_sub(1)) != "or" => {
                Some("REPLACE INTO")
            }
            // UPDATE [OR …] name SET column =.
            "update"
                if (ident(i + 1) && t(i + 2) == "set" && ident(i + 3) && t(i + 4) == "=")
                    || (t(i + 1) == "or" && t(i + 4) == "set") =>
            {
                Some("UPDATE … SET")
            }
            "delete" if t(i + 1) == "from" && ident(i + 2) => Some("DELETE FROM"),
            "create" | "drop" => {
                let mut j = i + 1;
                while matches!(t(j), "unique" | "temp" | "temporary" | "virtual") {
                    j += 1;
                }
                matches!(t(j), "table" | "index" | "view" | "trigger")
                    .then_some("CREATE/DROP TABLE|INDEX|VIEW|TRIGGER")
            }
            "alter" if t(i + 1) == "table" => Some("ALTER TABLE"),
            // BEGIN DEFERRED|IMMEDIATE|EXCLUSIVE|TRANSACTION.
            "begin"
                if matches!(t(i + 1), "deferred" | "immediate" | "exclusive" | "transaction") =>
            {
                Some("BEGIN")
            }
            "savepoint" | "release" if i == 0 && ident(1) && tokens.len() <= 3 => Some("SAVEPOINT"),
            "pragma" if ident(i + 1) => Some("PRAGMA"),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    // A statement file included into the code.
    literal.trim_end().ends_with(".sql").then_some("a .sql file")
}

/// The start of a literal on one line, for a violation message.
fn excerpt(literal: &str) -> String {
    let one_line: String = literal.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut short: String = one_line.chars().take(60).collect();
    if short.len() < one_line.len() {
        short.push('…');
    }
    format!("\"{short}\"")
}

/// The detectors themselves, on known inputs.
mod detectors {
    use super::*;

    #[test]
    fn the_lexer_tells_code_comments_and_literals_apart() {
        let src = r####"
// SELECT a FROM b in a comment
/* block /* nested */ still comment "not a string" */
let a = "SELECT x FROM t";
let b = r#"INSERT INTO t "quoted" VALUES (1)"#;
let c = '"'; let d = '\''; fn f<'a>(x: &'a str) {}
let e = br##"raw "# bytes"##;
let f = "multi
line";
let r#type = 1;
"####;
        let lexed = Lexed::new(src);
        let texts: Vec<&str> = lexed.strings.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            texts,
            [
                "SELECT x FROM t",
                "INSERT INTO t \"quoted\" VALUES (1)",
                "raw \"# bytes",
                "multi\nline"
            ]
        );
        assert_eq!(lexed.strings[0].0, 4, "the line a literal starts on");
        assert_eq!(lexed.strings[3].0, 8);
        assert_eq!(lexed.code.lines().count(), src.lines().count(), "newlines kept");
        assert!(!lexed.code.contains("SELECT") && !lexed.code.contains("comment"));
        assert!(lexed.code.contains("fn f<'a>(x: &'a str)"), "lifetimes stay code");
        assert!(lexed.code.contains("let r#type = 1;"), "raw identifiers stay code");
    }

    #[test]
    fn sql_is_found_and_prose_is_not() {
        for sql in [
            "SELECT count(*) FROM reports",
            "select a,\n b from t where x = ?1",
            "INSERT INTO agents (agent_id) VALUES (?1)",
            "INSERT OR REPLACE INTO t VALUES (1)",
            "UPDATE agents SET last_tick = ?1",
            "DELETE FROM replay_seen WHERE tick < ?1",
            "CREATE TABLE IF NOT EXISTS t (a INTEGER)",
            "CREATE UNIQUE INDEX i ON t (a)",
            "PRAGMA user_version",
            "pragma journal_mode = WAL",
            "WITH x AS (SELECT 1 FROM t) SELECT * FROM x",
            "../schema.sql",
            "BEGIN DEFERRED",
            "COMMIT",
            "ROLLBACK;",
            "SAVEPOINT batch",
        ] {
            assert!(sql_in(sql).is_some(), "{sql}");
        }
        for prose in [
            "select the agents you want",
            "could not update the key set",
            "delete the file from disk",
            "insert a row",
            "created table of contents",
            "the pragma",
            "Updated settings",
            "begin the build",
            "commit the site",
            "commit",
            "end",
            "release 1.0 of the agent",
        ] {
            assert_eq!(sql_in(prose), None, "{prose}");
        }
    }

    #[test]
    fn io_is_found_through_use_trees_and_paths() {
        let code = Lexed::new(
            "use std::{fs, io::{self, stdin}};\n\
             use std::net::{IpAddr, SocketAddr};\n\
             let t = std::time::SystemTime::now();\n\
             let s = std :: process :: id();\n\
             println!(\"x\");\n\
             let stdout_like = 1; // stdout in a comment\n\
             let text = \"std::fs in a string\";\n",
        )
        .code;
        let found: Vec<String> =
            io_uses(&code).into_iter().map(|(l, w)| format!("{l}: {w}")).collect();
        assert_eq!(
            found,
            [
                "1: stdin",
                "1: use std::fs",
                "1: use std::io::stdin",
                "3: SystemTime::now",
                "4: std::process",
                "5: println!"
            ]
        );
    }
}
