//! The Debian packages of `scripts/build-packages.sh`, built from what the
//! test run already has — cargo's build of kattila-receiver, sitegen and
//! kattila-gen-docs (feature gen-docs; stripped when packaged) and the quick
//! static agents (tests/util/dist.rs) — so they cost no extra compilation;
//! the release script packages the same files fully optimised. Checked:
//!
//! - contents and metadata (`dpkg-deb -I`, `-c`): what each package holds,
//!   owners and modes, conffiles, the version from the workspace, library
//!   dependencies, man pages that list every flag of the clap definitions;
//! - lintian: no error or warning beyond those accepted, with reasons, in
//!   `packaging/debian/*.lintian-overrides`;
//! - a scratch root: this machine's own root as the lower layer of an
//!   overlay in a private mount namespace, so nothing reaches the real
//!   system. There dpkg installs the packages, the installed binaries answer
//!   `--version` and `--help`, `systemd-analyze verify` checks the units, an
//!   upgrade keeps an edited conffile, removal keeps the data, purge deletes
//!   it, and only a first installation with a key already configured
//!   enables the services.
//!
//! Each part skips, saying why, when a tool is missing (dpkg-dev, lintian,
//! systemd, root for the scratch root, the musl targets for the agents).

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use clap::CommandFactory;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The version as Debian spells it (scripts/build-packages.sh).
fn deb_version() -> String {
    VERSION.replacen('-', "~", 1)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn stdout_of(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The built packages: file names by (package, architecture).
struct Packages {
    dir: PathBuf,
    debs: BTreeMap<(&'static str, String), PathBuf>,
    server_arch: String,
}

impl Packages {
    fn deb(&self, package: &'static str, arch: &str) -> &Path {
        &self.debs[&(package, arch.to_string())]
    }
}

/// Builds the packages once per test run; `Err` is a reason to skip.
fn packages() -> Result<&'static Packages, String> {
    static BUILT: OnceLock<Result<Packages, String>> = OnceLock::new();
    BUILT.get_or_init(build).as_ref().map_err(Clone::clone)
}

fn build() -> Result<Packages, String> {
    let Some(gen_docs) = option_env!("CARGO_BIN_EXE_kattila-gen-docs") else {
        return Err("kattila-gen-docs is built only with --features gen-docs \
                    (scripts/test.sh passes --all-features)"
            .into());
    };
    for (tool, package) in
        [("dpkg-deb", "dpkg"), ("dpkg-shlibdeps", "dpkg-dev"), ("strip", "binutils")]
    {
        if !kattila_testsupport::installed(tool) {
            return Err(format!("{tool} is not installed (Debian package {package})"));
        }
    }
    let mut agent_dir = None;
    for arch in ["x86_64", "aarch64"] {
        let bin = util::dist::fleet_binary(arch, &[])?;
        agent_dir = bin.parent().map(Path::to_path_buf);
    }
    let bin_dir = Path::new(util::RECEIVER).parent().unwrap();
    assert_eq!(Path::new(gen_docs).parent(), Some(bin_dir));
    assert_eq!(Path::new(util::SITEGEN).parent(), Some(bin_dir));

    let dir = root().join("target/test-packages");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(root().join("scripts/build-packages.sh"))
        .arg("--out")
        .arg(&dir)
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--agent-dir")
        .arg(agent_dir.unwrap())
        .output()
        .unwrap();
    eprintln!("{}", text(&out.stderr));
    assert!(out.status.success(), "scripts/build-packages.sh failed: {}", text(&out.stderr));

    let server_arch = stdout_of("dpkg", &["--print-architecture"]).trim().to_string();
    let mut debs = BTreeMap::new();
    for (package, arch) in
        [("kattila-agent", "amd64"), ("kattila-agent", "arm64"), ("kattila-server", &server_arch)]
    {
        let deb = dir.join(format!("{package}_{}_{arch}.deb", deb_version()));
        assert!(deb.is_file(), "{} was built", deb.display());
        debs.insert((package, arch.to_string()), deb);
    }
    Ok(Packages { dir, debs, server_arch })
}

/// `dpkg-deb -c`: path → (mode string, owner/group) of every entry.
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    stdout_of("dpkg-deb", &["-c", deb.to_str().unwrap()])
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_string();
            (path, (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    stdout_of("dpkg-deb", &["-f", deb.to_str().unwrap(), name]).trim().to_string()
}

/// Extracts a package (files and control files) into a fresh directory.
fn extract(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    stdout_of("dpkg-deb", &["-x", deb.to_str().unwrap(), d]);
    stdout_of("dpkg-deb", &["-e", deb.to_str().unwrap(), &format!("{d}/DEBIAN")]);
    dir
}

fn gunzip(path: &Path) -> String {
    stdout_of("gzip", &["-dc", path.to_str().unwrap()])
}

/// The commands a program's man pages document: it and its visible
/// subcommands, at every depth (`kattila-receiver notify check`).
fn commands(program: &str) -> Vec<clap::Command> {
    let mut cmd = match program {
        "kattila-agent" => kattila_agent::cli::Args::command(),
        "kattila-receiver" => kattila_receiver::cli::Args::command(),
        "sitegen" => kattila_sitegen::cli::Args::command(),
        _ => unreachable!(),
    };
    // As kattila-gen-docs: no page for clap's `help` subcommand.
    cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut all = Vec::new();
    let mut pending = vec![cmd];
    while let Some(cmd) = pending.pop() {
        pending.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        all.push(cmd);
    }
    all
}

/// The files a package must hold for `program`: binary, man pages (one per
/// command and subcommand), completions.
fn program_files(program: &str) -> Vec<String> {
    let mut files = vec![
        format!("/usr/bin/{program}"),
        format!("/usr/share/bash-completion/completions/{program}"),
        format!("/usr/share/zsh/vendor-completions/_{program}"),
        format!("/usr/share/fish/vendor_completions.d/{program}.fish"),
    ];
    for cmd in commands(program) {
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
        files.push(format!("/usr/share/man/man8/{name}.8.gz"));
    }
    files
}

/// Every man page lists every visible long flag of its command, and the
/// bash completion offers them: both come from the clap definitions the
/// binaries were built with, so a new flag cannot be missing.
fn check_docs(tree: &Path, program: &str) {
    let bash = std::fs::read_to_string(
        tree.join(format!("usr/share/bash-completion/completions/{program}")),
    )
    .unwrap();
    for cmd in commands(program) {
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
        let page = gunzip(&tree.join(format!("usr/share/man/man8/{name}.8.gz")));
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{name}.8 is a man page");
        assert!(page.contains(VERSION), "{name}.8 names version {VERSION}");
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                let flag = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&flag), "{name}.8 documents --{long}");
                assert!(bash.contains(&format!("--{long}")), "bash completes --{long}");
            }
        }
    }
}

/// The ELF machine of a binary (0x3e x86-64, 0xb7 aarch64), whether it has
/// a program interpreter (is dynamically linked) and a symbol table (is not
/// stripped).
fn elf(path: &Path) -> (u16, bool, bool) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..5], b"\x7fELF\x02", "{} is an ELF64 file", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    let interp = (0..phnum).any(|i| {
        u32::from_le_bytes(b[phoff + i * phentsize..][..4].try_into().unwrap()) == 3
        // PT_INTERP
    });
    let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
    let (shentsize, shnum) = (u16_at(0x3a) as usize, u16_at(0x3c) as usize);
    let symtab = (0..shnum).any(|i| {
        u32::from_le_bytes(b[shoff + i * shentsize + 4..][..4].try_into().unwrap()) == 2
        // SHT_SYMTAB
    });
    (u16_at(0x12), interp, symtab)
}

/// What every package holds besides its programs.
fn common_files(package: &str) -> Vec<String> {
    let mut files = vec![
        format!("/usr/share/doc/{package}/copyright"),
        format!("/usr/share/doc/{package}/changelog.gz"),
    ];
    if root().join(format!("packaging/debian/{package}.lintian-overrides")).exists() {
        files.push(format!("/usr/share/lintian/overrides/{package}"));
    }
    files
}

fn check_package(
    deb: &Path,
    package: &str,
    arch: &str,
    mut expected: Vec<String>,
    conffiles: &[&str],
) -> tempfile::TempDir {
    assert_eq!(field(deb, "Package"), package);
    assert_eq!(field(deb, "Version"), deb_version(), "the workspace version");
    assert_eq!(field(deb, "Architecture"), arch);
    let maintainer = field(deb, "Maintainer");
    assert!(maintainer.contains('<') && maintainer.ends_with('>'), "{maintainer}");
    assert!(!field(deb, "Description").is_empty());
    let info = stdout_of("dpkg-deb", &["-I", deb.to_str().unwrap()]);
    for member in ["control", "conffiles", "md5sums", "postinst", "prerm", "postrm"] {
        assert!(info.contains(&format!(" {member}")), "{package} has DEBIAN/{member}:\n{info}");
    }

    let listing = contents(deb);
    for (path, (mode, owner)) in &listing {
        assert_eq!(owner, "root/root", "{path} belongs to root in the package");
        if !mode.starts_with('d') {
            assert!(
                expected.contains(path) || conffiles.contains(&path.as_str()),
                "{package} holds nothing else: {path}"
            );
        }
    }
    expected.extend(conffiles.iter().map(|c| c.to_string()));
    for path in &expected {
        assert!(listing.contains_key(path), "{package} holds {path}");
    }
    for conffile in conffiles {
        assert_eq!(listing[*conffile].0, "-rw-------", "{conffile} is mode 600");
    }
    for (path, (mode, _)) in &listing {
        if path.starts_with("/usr/bin/") && !mode.starts_with('d') {
            assert_eq!(mode, "-rwxr-xr-x", "{path}");
        }
    }

    let tree = extract(deb);
    let declared = std::fs::read_to_string(tree.path().join("DEBIAN/conffiles")).unwrap();
    let mut declared: Vec<&str> = declared.lines().collect();
    declared.sort();
    let mut wanted = conffiles.to_vec();
    wanted.sort();
    assert_eq!(declared, wanted, "{package}'s conffiles");
    // Every unit runs a binary of the package, at its packaged path.
    for entry in std::fs::read_dir(tree.path().join("lib/systemd/system")).unwrap() {
        let unit = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in unit.lines().filter(|l| l.starts_with("ExecStart=")) {
            let program = line["ExecStart=".len()..].split_whitespace().next().unwrap();
            assert!(listing.contains_key(program), "{line}: {program} is in {package}");
        }
    }
    let changelog = gunzip(&tree.path().join(format!("usr/share/doc/{package}/changelog.gz")));
    assert!(
        changelog.starts_with(&format!("{package} ({}) ", deb_version())),
        "the changelog's entry is this version: {changelog}"
    );
    tree
}

#[test]
fn packages_hold_what_they_should() {
    let p = match packages() {
        Ok(p) => p,
        Err(reason) => return kattila_testsupport::skip("packages_hold_what_they_should", &reason),
    };
    for (arch, machine) in [("amd64", 0x3e), ("arm64", 0xb7)] {
        let mut expected = program_files("kattila-agent");
        expected.push("/lib/systemd/system/kattila-agent.service".into());
        expected.extend(common_files("kattila-agent"));
        let deb = p.deb("kattila-agent", arch);
        let tree = check_package(deb, "kattila-agent", arch, expected, &["/etc/kattila/agent.env"]);
        assert_eq!(field(deb, "Depends"), "", "the static agent depends on nothing");
        assert_eq!(
            elf(&tree.path().join("usr/bin/kattila-agent")),
            (machine, false, false),
            "the {arch} agent is a static, stripped binary for its architecture"
        );
        check_docs(tree.path(), "kattila-agent");
    }

    let mut expected = program_files("kattila-receiver");
    expected.extend(program_files("sitegen"));
    for unit in
        ["kattila-receiver.service", "sitegen.service", "sitegen-once.service", "sitegen.timer"]
    {
        expected.push(format!("/lib/systemd/system/{unit}"));
    }
    expected.push("/usr/share/doc/kattila-server/examples/nginx-kattila.conf".into());
    expected.extend(common_files("kattila-server"));
    let deb = p.deb("kattila-server", &p.server_arch);
    let tree = check_package(
        deb,
        "kattila-server",
        &p.server_arch,
        expected,
        &["/etc/kattila/receiver.env", "/etc/kattila/sitegen.env"],
    );
    let depends = field(deb, "Depends");
    assert!(depends.contains("libc6 (>= "), "dpkg-shlibdeps found the C library: {depends}");
    for program in ["kattila-receiver", "sitegen"] {
        check_docs(tree.path(), program);
        let (_, dynamic, symbols) = elf(&tree.path().join(format!("usr/bin/{program}")));
        assert!(dynamic, "{program} links the system's C library");
        assert!(!symbols, "{program} is stripped");
    }
}

#[test]
fn packages_pass_lintian() {
    let p = match packages() {
        Ok(p) => p,
        Err(reason) => return kattila_testsupport::skip("packages_pass_lintian", &reason),
    };
    if !kattila_testsupport::installed("lintian") {
        return kattila_testsupport::skip("packages_pass_lintian", "lintian is not installed");
    }
    let mut failures = Vec::new();
    for deb in p.debs.values() {
        let out = run(
            "lintian",
            &["--fail-on", "error,warning", "--display-info", deb.to_str().unwrap()],
        );
        let report = text(&out.stdout);
        eprintln!("lintian {}:\n{report}{}", deb.display(), text(&out.stderr));
        // An accepted tag that no longer occurs is a stale override.
        if !out.status.success() || report.contains("unused-override") {
            failures.push(format!("{}:\n{report}{}", deb.display(), text(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "lintian:\n{}", failures.join("\n"));
}

/// A copy-on-write view of this machine's root in a private mount
/// namespace: a holder process keeps the namespace (tmpfs with the overlay's
/// upper layer, the overlay, /dev, /proc, an empty /run and /tmp, the
/// packages at /mnt/packages) alive; commands enter it with nsenter and
/// chroot. Killing the holder drops everything.
struct ScratchRoot {
    holder: Child,
    merged: PathBuf,
    _dir: tempfile::TempDir,
}

impl ScratchRoot {
    fn new(packages: &Path) -> Result<ScratchRoot, String> {
        if !stdout_of("id", &["-u"]).trim().eq("0") {
            return Err("needs root (mount namespace, overlay, chroot)".into());
        }
        for tool in ["unshare", "nsenter", "chroot"] {
            if !kattila_testsupport::installed(tool) {
                return Err(format!("{tool} is not installed"));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let merged = dir.path().join("layers/root");
        let setup = format!(
            "set -e
             mount -t tmpfs -o mode=755 tmpfs {d}
             mkdir -p {d}/layers/upper {d}/layers/work {d}/layers/root
             mount -t overlay overlay -o lowerdir=/,upperdir={d}/layers/upper,workdir={d}/layers/work {d}/layers/root
             mount --rbind /dev {d}/layers/root/dev
             mount -t proc proc {d}/layers/root/proc
             mount -t tmpfs tmpfs {d}/layers/root/run
             mount -t tmpfs tmpfs {d}/layers/root/tmp
             mkdir -p {d}/layers/root/mnt/packages
             mount --bind -o ro {pkgs} {d}/layers/root/mnt/packages
             echo ready
             exec sleep 100000",
            pkgs = packages.display()
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &setup])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let _ = holder.kill();
            let mut err = String::new();
            holder.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return Err(format!(
                "cannot make an overlay of / in a mount namespace: {}",
                err.trim()
            ));
        }
        Ok(ScratchRoot { holder, merged, _dir: dir })
    }

    /// Runs a shell script inside the scratch root.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.holder.id()))
            .arg("--mount")
            .arg("chroot")
            .arg(&self.merged)
            .args(["/bin/sh", "-c", script])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a script that must succeed; returns its standard output and error.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "in the scratch root: {script}\n{all}");
        all
    }

    fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e {path} || test -L {path}")).status.success()
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";

#[test]
fn packages_install_upgrade_remove_and_purge_in_a_scratch_root() {
    const TEST: &str = "packages_install_upgrade_remove_and_purge_in_a_scratch_root";
    let p = match packages() {
        Ok(p) => p,
        Err(reason) => return kattila_testsupport::skip(TEST, &reason),
    };
    let scratch = match ScratchRoot::new(&p.dir) {
        Ok(s) => s,
        Err(reason) => return kattila_testsupport::skip(TEST, &reason),
    };
    let name = |deb: &Path| format!("/mnt/packages/{}", deb.file_name().unwrap().to_str().unwrap());
    let agent = name(p.deb("kattila-agent", "amd64"));
    let server = name(p.deb("kattila-server", &p.server_arch));

    // First installation, nothing configured: users and directories made,
    // nothing enabled, and each package says what to do next.
    let said = scratch.ok(&format!("dpkg -i {agent} {server}"));
    let hints: Vec<&str> = said.lines().filter(|l| l.contains(": next, ")).collect();
    assert_eq!(hints.len(), 2, "one line of advice per package: {said}");
    assert!(hints.iter().any(|l| l.starts_with("kattila-agent: ")
        && l.contains("/etc/kattila/agent.env")
        && l.ends_with("systemctl enable --now kattila-agent")));
    assert!(hints.iter().any(|l| l.starts_with("kattila-server: ")
        && l.contains("/etc/kattila/receiver.env")
        && l.ends_with("systemctl enable --now kattila-receiver sitegen")));
    let owners = scratch.ok("stat -c '%n %U:%G %a' /var/lib/kattila /var/lib/kattila-agent \
         /etc/kattila/agent.env /etc/kattila/receiver.env /etc/kattila/sitegen.env");
    assert_eq!(
        owners.lines().collect::<Vec<_>>(),
        [
            "/var/lib/kattila kattila:kattila 751",
            "/var/lib/kattila-agent kattila-agent:kattila-agent 700",
            "/etc/kattila/agent.env root:root 600",
            "/etc/kattila/receiver.env root:root 600",
            "/etc/kattila/sitegen.env root:root 600",
        ]
    );
    for user in ["kattila", "kattila-agent"] {
        let entry = scratch.ok(&format!("getent passwd {user}"));
        assert!(entry.trim_end().ends_with(":/usr/sbin/nologin"), "{entry}");
        let uid: u32 = entry.split(':').nth(2).unwrap().parse().unwrap();
        assert!(uid < 1000, "{user} is a system user: {entry}");
    }
    for unit in ["kattila-agent.service", "kattila-receiver.service", "sitegen.service"] {
        assert!(!scratch.exists(&format!("{WANTS}/{unit}")), "{unit} is not enabled without a key");
    }
    // Configuring again (as dpkg-reconfigure does) finds everything in place.
    scratch.ok(&format!(
        "/var/lib/dpkg/info/kattila-agent.postinst configure {v}
         /var/lib/dpkg/info/kattila-server.postinst configure {v}",
        v = deb_version()
    ));

    // The layout works as installed: the receiver (as its unit runs it:
    // user kattila, umask 027) creates its database, sitegen (umask 022)
    // publishes the site, and the web server's user can read the site but
    // neither the database nor the site key, nor list the directory.
    let port = util::free_port();
    scratch.ok(&format!(
        "set -e
         umask 027
         KATTILA_PSK=scratch-key runuser -u kattila -- /usr/bin/kattila-receiver \
             --listen 127.0.0.1:{port} --db /var/lib/kattila/kattila.db &
         for i in $(seq 300); do
             curl -fsS http://127.0.0.1:{port}/status/healthcheck >/dev/null 2>&1 && break
             sleep 0.1
         done
         kill $! && wait $! || true
         umask 022
         runuser -u kattila -- /usr/bin/sitegen --once --db /var/lib/kattila/kattila.db \
             --out /var/lib/kattila/site"
    ));
    scratch.ok("runuser -u www-data -- cat /var/lib/kattila/site/current/index.html >/dev/null");
    for denied in [
        "cat /var/lib/kattila/kattila.db",
        "cat /var/lib/kattila/site/.sitegen/site-key",
        "ls /var/lib/kattila",
    ] {
        let out = scratch.sh(&format!("runuser -u www-data -- {denied}"));
        assert!(!out.status.success(), "the web server may not {denied}");
    }

    // The installed programs are this build's, with version and help.
    for (program, bin) in [
        ("kattila-agent", util::AGENT),
        ("kattila-receiver", util::RECEIVER),
        ("sitegen", util::SITEGEN),
    ] {
        let version = scratch.ok(&format!("/usr/bin/{program} --version"));
        assert!(version.starts_with(&format!("{program} {VERSION}")), "{version}");
        if program != "kattila-agent" {
            // The same binary (stripped) as the test run's.
            assert_eq!(version, text(&run(bin, &["--version"]).stdout));
        }
        let help = scratch.ok(&format!("/usr/bin/{program} --help"));
        assert!(help.contains("Usage:"), "{help}");
        scratch.ok(&format!("test -s /usr/share/man/man8/{program}.8.gz"));
    }

    // systemd checks the units as installed (binaries, users, directives).
    if scratch.sh("command -v systemd-analyze").status.success() {
        let units = "/lib/systemd/system/kattila-agent.service \
                     /lib/systemd/system/kattila-receiver.service \
                     /lib/systemd/system/sitegen.service \
                     /lib/systemd/system/sitegen-once.service \
                     /lib/systemd/system/sitegen.timer";
        let out = scratch.sh(&format!("SYSTEMD_LOG_LEVEL=notice systemd-analyze verify {units}"));
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "systemd-analyze verify:\n{report}");
        let ours: Vec<&str> =
            report.lines().filter(|l| l.contains("kattila") || l.contains("sitegen")).collect();
        assert!(ours.is_empty(), "systemd-analyze verify complains about our units:\n{report}");
    } else {
        kattila_testsupport::skip(
            "packages_install_upgrade_remove_and_purge_in_a_scratch_root (systemd-analyze verify)",
            "systemd-analyze is not installed (Debian package systemd)",
        );
    }

    // Upgrade: an edited conffile and the agent's state stay as they were.
    scratch.ok("sed -i 's|^#MANAGER_URL=.*|MANAGER_URL=http://192.0.2.1:5086|; \
                 s|^#DNS=.*|DNS=kattila.example.com|' /etc/kattila/agent.env
         echo 'KATTILA_PSK=a fleet key for the test' >> /etc/kattila/receiver.env
         echo agent-id > /var/lib/kattila-agent/id");
    let edited = scratch.ok("cat /etc/kattila/agent.env /etc/kattila/receiver.env");
    let said = scratch.ok(&format!("dpkg -i {agent} {server}"));
    assert!(!said.contains(": next, "), "configured packages give no advice: {said}");
    assert_eq!(scratch.ok("cat /etc/kattila/agent.env /etc/kattila/receiver.env"), edited);
    assert_eq!(
        scratch.ok("stat -c '%a' /etc/kattila/agent.env /etc/kattila/receiver.env"),
        "600\n600\n"
    );
    assert_eq!(scratch.ok("cat /var/lib/kattila-agent/id"), "agent-id\n");
    for unit in ["kattila-agent.service", "kattila-receiver.service"] {
        assert!(!scratch.exists(&format!("{WANTS}/{unit}")), "an upgrade leaves {unit} as it was");
    }

    // Removal keeps data and settings; purge deletes them, and the links
    // of `systemctl enable`.
    scratch.ok(&format!(
        "mkdir -p {WANTS}
         ln -s /lib/systemd/system/kattila-agent.service {WANTS}/kattila-agent.service
         ln -s /lib/systemd/system/kattila-receiver.service {WANTS}/kattila-receiver.service
         dpkg -r kattila-agent kattila-server"
    ));
    for path in [
        "/usr/bin/kattila-agent",
        "/usr/bin/kattila-receiver",
        "/lib/systemd/system/sitegen.service",
    ] {
        assert!(!scratch.exists(path), "{path} is removed");
    }
    for path in
        ["/var/lib/kattila-agent/id", "/var/lib/kattila/kattila.db", "/etc/kattila/agent.env"]
    {
        assert!(scratch.exists(path), "removal keeps {path}");
    }
    scratch.ok("dpkg -P kattila-agent kattila-server");
    for path in [
        "/var/lib/kattila-agent",
        "/var/lib/kattila",
        "/etc/kattila",
        &format!("{WANTS}/kattila-agent.service"),
        &format!("{WANTS}/kattila-receiver.service"),
    ] {
        assert!(!scratch.exists(path), "purge deletes {path}");
    }
    let status = scratch.sh("dpkg -s kattila-agent");
    assert!(!status.status.success(), "kattila-agent is gone: {}", text(&status.stdout));

    // A first installation with the settings already in place (as
    // configuration management does it) enables the services.
    scratch.ok(&format!(
        "mkdir -p /etc/kattila
         printf 'MANAGER_URL=http://192.0.2.1:5086\\nDNS=kattila.example.com\\n' > /etc/kattila/agent.env
         printf 'KATTILA_DNS=kattila.example.com\\n' > /etc/kattila/receiver.env
         chmod 600 /etc/kattila/agent.env /etc/kattila/receiver.env
         dpkg -i --force-confold {agent} {server}"
    ));
    for unit in ["kattila-agent.service", "kattila-receiver.service", "sitegen.service"] {
        assert!(scratch.exists(&format!("{WANTS}/{unit}")), "{unit} is enabled once configured");
    }
}

/// The packages' Debian changelog is made from CHANGELOG.md: an item's
/// first line gains two characters ("- " becomes "  * "), a continuation
/// line is re-indented by four, and lintian refuses lines over 80. Checked
/// here on the text, so that no Debian tool is needed to find it.
#[test]
fn changelog_lines_fit_the_debian_changelog() {
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md")).unwrap();
    let too_long: Vec<String> = changelog
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let debian = if let Some(item) = line.strip_prefix("- ") {
                item.chars().count() + 4
            } else if line.starts_with([' ', '\t']) {
                line.trim_start().chars().count() + 4
            } else {
                line.chars().count() + 2
            };
            (debian > 80).then(|| format!("CHANGELOG.md:{}: {debian} characters", i + 1))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "lines too long for the Debian changelog:\n{}",
        too_long.join("\n")
    );
}
