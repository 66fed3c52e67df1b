//! The generated site in a real web server and a real browser: nginx (with
//! the shipped `packaging/nginx/kattila.conf`) on loopback, and headless
//! Chromium driven by playwright-core (`tests/browser/check.mjs`), which
//! crawls the site at `/`, under `/kattila/` and from `file://`.
//!
//! Needs `nginx`, `chromium` and `node`/`npm` (Debian: nginx, chromium,
//! nodejs, npm); the npm package playwright-core is installed into
//! `tests/browser/node_modules` with `npm ci` on first use.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn in_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|p| p.join(program)).find(|p| p.is_file())
}

fn nginx_path() -> Option<PathBuf> {
    in_path("nginx").or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
}

/// Why the browser checks cannot run here, if they cannot. Installs the
/// npm dependencies (`npm ci`) when they are missing.
pub fn skip_reason() -> Option<String> {
    if nginx_path().is_none() {
        return Some("nginx is not installed (Debian: nginx)".into());
    }
    if !Path::new(CHROMIUM).is_file() {
        return Some(format!("{CHROMIUM} is not installed (Debian: chromium)"));
    }
    if in_path("node").is_none() {
        return Some("node is not installed (Debian: nodejs, npm)".into());
    }
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        if in_path("npm").is_none() {
            return Some("npm is not installed (Debian: npm)".into());
        }
        eprintln!("installing playwright-core: npm ci in {}", dir.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return Some(format!("`npm ci` failed in {}", dir.display()));
        }
    }
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.to_string()))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

/// nginx in the foreground on `127.0.0.1:port`, serving `out/current` through
/// the shipped server block; stopped on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `packaging/nginx/kattila.conf`, its `listen` lines
    /// pointed at a free loopback port and the site directory at `out`.
    pub fn start(out: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/nginx/kattila.conf"),
        )
        .unwrap();
        let port = free_port();
        let out = out.canonicalize().unwrap();
        // Exactly the lines the operator adapts, nothing else.
        const SITE: &str = "/var/lib/kattila/site";
        let mut conf = String::new();
        let (mut listens, mut paths) = (0, 0);
        for line in shipped.lines() {
            let trimmed = line.trim();
            if trimmed == "listen 80;" {
                conf.push_str(&format!("    listen 127.0.0.1:{port};\n"));
                listens += 1;
            } else if trimmed == "listen [::]:80;" {
                listens += 1;
            } else {
                if line.contains(SITE) && !trimmed.starts_with('#') {
                    paths += 1;
                }
                conf.push_str(&line.replace(SITE, out.to_str().unwrap()));
                conf.push('\n');
            }
        }
        assert_eq!(listens, 2, "the shipped nginx server block listens on port 80 (IPv4 and IPv6)");
        assert_eq!(paths, 2, "the shipped nginx server block serves {SITE}/current twice");
        let site_conf = dir.path().join("kattila.conf");
        std::fs::write(&site_conf, conf).unwrap();
        let d = dir.path().display();
        let user = if is_root() { "user root;\n" } else { "" };
        let main = format!(
            "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  \
             access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             include {};\n}}\n",
            site_conf.display()
        );
        let main_conf = dir.path().join("nginx.conf");
        std::fs::write(&main_conf, main).unwrap();
        let mut child = Command::new(nginx_path().unwrap())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&main_conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[nginx] {line}");
                }
            });
        }
        let nginx = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "nginx did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The access log: (status, request path) per request.
    pub fn requests(&self) -> Vec<(u16, String)> {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                // combined format: … "GET /path HTTP/1.1" 200 …
                let mut parts = l.split('"');
                let request = parts.nth(1)?;
                let status = parts.next()?.split_whitespace().next()?.parse().ok()?;
                Some((status, request.split_whitespace().nth(1)?.to_string()))
            })
            .collect()
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers and exits; SIGKILL
    /// only if it does not (a killed master would leave its workers behind).
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where screenshots of test `name` go (kept after the test).
pub fn artefact_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `check.mjs` over `bases` ((label, url, screenshots)); returns its
/// JSON report.
pub fn run_check(bases: &[(&str, String, bool)], also: &[&str], artefacts: &Path) -> Value {
    let config = serde_json::json!({
        "chromium": CHROMIUM,
        "artefacts": artefacts,
        "also": also,
        "bases": bases.iter().map(|(label, url, shots)| serde_json::json!({
            "label": label, "url": url, "screenshots": shots,
        })).collect::<Vec<_>>(),
    });
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), config.to_string()).unwrap();
    let out = Command::new("node")
        .arg(browser_dir().join("check.mjs"))
        .arg(cfg.path())
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "the browser check could not run (exit {code}): {stdout}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check.mjs printed no JSON ({e}): {stdout}"))
}

/// The JSON files that pages do not link to but tools read.
pub const API_FILES: &[&str] = &[
    "api/v1/summary.json",
    "api/v1/agents.json",
    "api/v1/alarms.json",
    "api/v1/topology.json",
    "api/v1/topology.netjson",
    "api/v1/schema/summary.schema.json",
    "api/v1/schema/agents.schema.json",
    "api/v1/schema/agent.schema.json",
    "api/v1/schema/alarms.schema.json",
    "api/v1/schema/topology.schema.json",
    "api/v1/schema/netjson.schema.json",
];

/// Serves `out/current` with nginx and checks it in Chromium at `/`, under
/// `/kattila/` and from `file://`: every page loads without console errors,
/// every link resolves, every agent page is reached, every map node has a
/// `<title>` and every agent appears on a cluster map; screenshots go to
/// the test's artefact directory (returned).
pub fn check_site(out: &Path, name: &str) -> PathBuf {
    let current = out.join("current");
    let agents: Value = serde_json::from_slice(
        &std::fs::read(current.join("api/v1/agents.json")).expect("the site has agents.json"),
    )
    .unwrap();
    let agents = agents["agents"].as_array().unwrap().clone();
    assert!(!agents.is_empty());
    let nginx = Nginx::start(out);
    let artefacts = artefact_dir(name);
    // Through the `current` link, as a reader opens it (sitegen may switch
    // it to a new build and delete old ones meanwhile).
    let current_abs = std::path::absolute(&current).unwrap();
    let file_url = format!("file://{}/index.html", current_abs.display());
    let report = run_check(
        &[
            ("root", nginx.url("/"), true),
            ("subpath", nginx.url("/kattila/"), true),
            ("file", file_url, false),
        ],
        API_FILES,
        &artefacts,
    );
    eprintln!("browser check: {report}");
    let bases = report["bases"].as_array().unwrap();
    assert_eq!(bases.len(), 3);
    for base in bases {
        let label = base["label"].as_str().unwrap();
        assert_eq!(base["errors"], serde_json::json!([]), "{label}: the browser found errors");
        let pages: Vec<&str> =
            base["pages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        for want in ["map.html", "matrix.html", "alarms.html"] {
            assert!(pages.contains(&want), "{label}: {want} not reached from the overview");
        }
        for agent in &agents {
            let page = agent["page"].as_str().unwrap();
            assert!(pages.contains(&page), "{label}: agent page {page} not reached");
        }
        let resources: Vec<&str> =
            base["resources"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert!(resources.contains(&"static/style.css"), "{label}: {resources:?}");
        // Every node of every map has a title (check.mjs reports a missing
        // one as an error); every agent is a node of its cluster's map.
        let maps = base["map_nodes"].as_object().unwrap();
        assert!(maps.contains_key("map.html"), "{label}: {maps:?}");
        for agent in &agents {
            let id = agent["agent_id"].as_str().unwrap();
            let on_map = maps.iter().any(|(page, titles)| {
                page.starts_with("map/")
                    && titles
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| t.as_str().is_some_and(|t| t.contains(id)))
            });
            assert!(on_map, "{label}: agent {id} is no node of any cluster map: {maps:?}");
        }
    }
    // What the shipped server block promises besides files: JSON types for
    // tools (also the .netjson file) and /kattila redirected to /kattila/.
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/api/v1/topology.netjson", "/kattila/api/v1/agents.json"] {
        let r = client.get(nginx.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
    }
    let r = client.get(nginx.url("/kattila")).send().unwrap();
    assert_eq!(r.status().as_u16(), 301);
    assert_eq!(r.headers()["location"], "/kattila/");
    // The server saw the same: every request answered, none with 404.
    let requests = nginx.requests();
    // (Chromium asks for /favicon.ico by itself when a page names no icon;
    // that is no link of the site.)
    let failed: Vec<_> =
        requests.iter().filter(|(s, p)| *s >= 400 && p != "/favicon.ico").collect();
    assert!(failed.is_empty(), "nginx answered errors: {failed:?}");
    assert!(requests.iter().any(|(s, p)| *s == 200 && p.starts_with("/kattila/agents/")));
    assert!(requests.iter().any(|(s, p)| *s == 200 && p.starts_with("/agents/")));
    for shot in ["overview", "map", "matrix", "alarms", "agent"] {
        for label in ["root", "subpath"] {
            let file = artefacts.join(format!("{label}-{shot}.png"));
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "screenshot {} missing or empty", file.display());
        }
    }
    eprintln!("screenshots: {}", artefacts.display());
    artefacts
}
