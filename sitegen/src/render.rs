//! Rendering the view into HTML pages with minijinja. Templates are
//! embedded from `templates/` (or read from `--templates DIR`, file by
//! file); agent-supplied strings are untrusted and escaped in HTML and SVG
//! alike. Pages whose inputs did not change since the last build are taken
//! from it (see [`PageKeys`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use minijinja::value::{Value, ValueKind};
use minijinja::{context, AutoEscape, Environment};
use rayon::prelude::*;
use serde::Serialize;

use crate::files::{Contents, SiteFile};
use crate::format::{age_text, ago, bytes_text, duration_text, human_time, iso_time, when};
use crate::layout::LayoutCache;
use crate::maps;
use crate::matrix;
use crate::shown;
use crate::view::{AgentView, AlarmView, ClusterView, Site};

/// A serialisable value for a template context.
fn v<T: Serialize>(x: T) -> Value {
    Value::from(minijinja::value::Serde(x))
}

/// Resolved alarm rows per page of the alarm log.
pub const ALARMS_PER_PAGE: usize = 100;
/// Agents the overview lists (problems first). A larger fleet's agents are
/// all listed on pages of [`AGENTS_PER_LIST_PAGE`] (`list/agents-N.html`),
/// so the page everyone opens stays small at any fleet size.
pub const INDEX_AGENTS: usize = 200;
/// Rows of each list of the problems page; the heading gives the total.
pub const PROBLEM_ROWS: usize = 100;
/// Rows per page of the full agent list.
pub const AGENTS_PER_LIST_PAGE: usize = 500;
/// Fleets up to this size get one full agent matrix; larger ones a
/// cluster × cluster matrix plus one matrix per cluster and per pair of
/// clusters (see [`matrix::ClusterLinks::new`] for which pairs).
pub const FULL_MATRIX_MAX: usize = 40;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("index.html", include_str!("../../templates/index.html")),
    ("problems.html", include_str!("../../templates/problems.html")),
    ("data.html", include_str!("../../templates/data.html")),
    ("agent.html", include_str!("../../templates/agent.html")),
    ("alarms.html", include_str!("../../templates/alarms.html")),
    ("agent_list.html", include_str!("../../templates/agent_list.html")),
    ("map.html", include_str!("../../templates/map.html")),
    ("cluster.html", include_str!("../../templates/cluster.html")),
    ("matrix.html", include_str!("../../templates/matrix.html")),
    ("matrix_table.html", include_str!("../../templates/matrix_table.html")),
    ("pair.html", include_str!("../../templates/pair.html")),
    ("graph.svg", include_str!("../../templates/graph.svg")),
    ("sparkline.svg", include_str!("../../templates/sparkline.svg")),
];

const STATIC_FILES: &[(&str, &str)] = &[
    ("static/style.css", include_str!("../../templates/static/style.css")),
    ("static/fresh.js", include_str!("../../templates/static/fresh.js")),
];

/// Pages warn that what they show is old after this long without a new
/// build, unless `--stale-after` says otherwise.
pub const STALE_AFTER_SECS: i64 = 180;

/// Which template names escape: HTML, SVG and XML alike (minijinja only
/// knows `.html` by itself).
pub fn auto_escape(name: &str) -> AutoEscape {
    if name.ends_with(".html") || name.ends_with(".svg") || name.ends_with(".xml") {
        AutoEscape::Html
    } else {
        AutoEscape::None
    }
}

/// The template environment: embedded templates, each replaced by
/// `dir/NAME` when that file exists.
pub fn environment(dir: Option<&Path>) -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(auto_escape);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    // Everything a template prints, unless it is already markup, is shown
    // by `shown::html`: hidden characters made visible, text with a
    // direction of its own isolated, then escaped (& < > " ', but not '/',
    // so relative links stay readable). Being the formatter, it applies
    // to every template, custom ones included.
    env.set_formatter(|out, state, value| {
        let plain = matches!(state.auto_escape(), AutoEscape::Html)
            && !value.is_safe()
            && !matches!(
                value.kind(),
                ValueKind::Number | ValueKind::Bool | ValueKind::None | ValueKind::Undefined
            );
        if !plain {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = match value.as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(value.to_string()),
        };
        out.write_str(&shown::html(&text)).map_err(minijinja::Error::from)
    });
    for (name, source) in TEMPLATES {
        let custom = dir.map(|d| d.join(name)).filter(|p| p.is_file());
        match custom {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("reading template {}: {e}", path.display()))?;
                env.add_template_owned(name.to_string(), text)?;
            }
            None => env.add_template(name, source)?,
        }
    }
    env.add_filter("ago", ago);
    env.add_filter("age", age_text);
    env.add_filter("iso", iso_time);
    env.add_filter("when", when);
    env.add_filter("bytes", bytes_text);
    env.add_filter("duration", duration_text);
    Ok(env)
}

/// Static files, with overrides from `dir/static/`.
fn static_files(dir: Option<&Path>) -> Vec<SiteFile> {
    STATIC_FILES
        .iter()
        .map(|(p, c)| {
            let custom = dir.map(|d| d.join(p)).and_then(|path| std::fs::read(path).ok());
            SiteFile::new(*p, custom.unwrap_or_else(|| c.as_bytes().to_vec()))
        })
        .collect()
}

/// Settings for rendering.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub templates: Option<PathBuf>,
    /// Seconds after which pages warn that what they show is old (None:
    /// [`STALE_AFTER_SECS`]).
    pub stale_after_secs: Option<i64>,
}

#[derive(Serialize)]
struct Spark {
    label: String,
    points: String,
    last: String,
    min: String,
    max: String,
    samples: usize,
}

fn sparkline(label: &str, series: &[(i64, f64)], fmt: impl Fn(f64) -> String) -> Option<Spark> {
    if series.len() < 2 {
        return None;
    }
    let (w, h) = (160.0, 32.0);
    let (t0, t1) = (series[0].0 as f64, series[series.len() - 1].0 as f64);
    let (lo, hi) =
        series.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &(_, v)| (lo.min(v), hi.max(v)));
    let span_t = (t1 - t0).max(1.0);
    let span_v = (hi - lo).max(1e-9);
    let points = series
        .iter()
        .map(|&(t, v)| {
            let x = (t as f64 - t0) / span_t * w;
            let y = if hi > lo { h - 2.0 - (v - lo) / span_v * (h - 4.0) } else { h / 2.0 };
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(Spark {
        label: label.into(),
        points,
        last: fmt(series[series.len() - 1].1),
        min: fmt(lo),
        max: fmt(hi),
        samples: series.len(),
    })
}

fn sparklines(a: &AgentView) -> Vec<Spark> {
    let series = |f: &dyn Fn(&kattila_store::snapshot::Sample) -> Option<f64>| -> Vec<(i64, f64)> {
        a.history.iter().filter_map(|s| f(s).filter(|v| v.is_finite()).map(|v| (s.ts, v))).collect()
    };
    [
        sparkline("load (1 min)", &series(&|s| s.load1), |v| format!("{v:.2}")),
        sparkline("receive rate", &series(&|s| s.rx_rate), |v| {
            format!("{}/s", bytes_text(v as i64))
        }),
        sparkline("send rate", &series(&|s| s.tx_rate), |v| format!("{}/s", bytes_text(v as i64))),
        sparkline("oldest handshake", &series(&|s| s.max_handshake_age.map(|v| v as f64)), |v| {
            age_text(v as i64)
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The keys of the pages of the last published build (see
/// [`SiteFile::key`]), so that the next build renders only the pages whose
/// inputs changed.
#[derive(Debug, Default)]
pub struct PageKeys {
    /// Keyed per process, so agent-supplied text cannot be chosen to make
    /// two different pages collide.
    hasher: std::hash::RandomState,
    published: HashMap<String, u64>,
}

impl PageKeys {
    fn key(&self, inputs: impl Hash) -> u64 {
        self.hasher.hash_one(inputs)
    }

    /// The previous build published `path` from the same inputs.
    fn unchanged(&self, path: &str, key: u64) -> bool {
        self.published.get(path) == Some(&key)
    }

    /// `files` were published: they are the previous build from now on.
    pub fn published(&mut self, files: &[SiteFile]) {
        self.published_keys(files.iter().map(|f| (f.path.as_str(), f.key)));
    }

    /// Files with these paths and keys were published.
    pub fn published_keys<'a>(&mut self, files: impl Iterator<Item = (&'a str, Option<u64>)>) {
        self.published = files.filter_map(|(path, key)| Some((path.to_string(), key?))).collect();
    }

    /// Renders every page again next time (after a failed publish, or when
    /// the previous build is gone).
    pub fn forget(&mut self) {
        self.published.clear();
    }
}

/// Renders every HTML page and static file of the site (the JSON API is
/// [`crate::api::files`]), the pages on all cores. With the embedded
/// templates, a page below the root whose key is in `keys` is not
/// rendered again but taken from the previous build.
pub fn render_site(
    site: &Site,
    cache: &LayoutCache,
    opts: &RenderOptions,
    keys: &PageKeys,
) -> anyhow::Result<Vec<SiteFile>> {
    render_site_into(site, cache, opts, keys, &Ok)
}

/// [`render_site`], handing each file to `sink` as soon as it is rendered
/// (publishing writes it and keeps only its path and hash, so the pages of
/// a large fleet are never all in memory at once). Returns what `sink`
/// returned, in page order.
pub fn render_site_into<T: Send>(
    site: &Site,
    cache: &LayoutCache,
    opts: &RenderOptions,
    keys: &PageKeys,
    sink: &(dyn Fn(SiteFile) -> anyhow::Result<T> + Sync),
) -> anyhow::Result<Vec<T>> {
    let mut alarms_of: HashMap<&str, Vec<&AlarmView>> = HashMap::new();
    for al in &site.alarms {
        let list = alarms_of.entry(al.agent_id.as_str()).or_default();
        if list.len() < 50 {
            list.push(al);
        }
    }
    let r = Renderer {
        site,
        stale_after: opts.stale_after_secs.unwrap_or(STALE_AFTER_SECS),
        env: environment(opts.templates.as_deref())?,
        // The embedded templates show nothing clock-relative below the
        // root, which is what page keys leave out (a test checks); custom
        // templates might, so their pages are always rendered.
        keys: opts.templates.is_none().then_some(keys),
        cache,
        index: maps::MapIndex::new(site),
        alarms_of,
        cluster_by_id: site.clusters.iter().map(|c| (c.id.as_str(), c)).collect(),
        cluster_links: (site.agents.len() > FULL_MATRIX_MAX)
            .then(|| matrix::ClusterLinks::new(site)),
    };
    let pairs = r.cluster_links.as_ref().map_or(0, |l| l.pair_pages().len());
    let history = site.alarms.iter().filter(|a| a.state != "active").count();
    let alarm_pages = history.div_ceil(ALARMS_PER_PAGE).max(1);
    let pages: Vec<Page> = [Page::Index, Page::Problems, Page::Data, Page::Map, Page::Matrix]
        .into_iter()
        .chain((1..=alarm_pages).map(Page::Alarms))
        .chain((1..=agent_list_pages(site)).map(Page::AgentList))
        .chain((0..site.clusters.len()).map(Page::Cluster))
        .chain((0..pairs).map(Page::Pair))
        .chain((0..site.agents.len()).map(Page::Agent))
        .collect();
    let mut files =
        pages.into_par_iter().map(|p| sink(r.render(p)?)).collect::<anyhow::Result<Vec<_>>>()?;
    for f in static_files(opts.templates.as_deref()) {
        files.push(sink(f)?);
    }
    Ok(files)
}

/// The pages of a site.
#[derive(Debug, Clone, Copy)]
enum Page {
    Index,
    Problems,
    /// What the JSON files are.
    Data,
    Map,
    Matrix,
    /// Page n (from 1) of the alarm log.
    Alarms(usize),
    /// Page n (from 1) of the full agent list.
    AgentList(usize),
    Cluster(usize),
    /// The agent matrix of a pair of clusters (n-th pair page).
    Pair(usize),
    Agent(usize),
}

/// What every page of one build is rendered from.
struct Renderer<'a> {
    site: &'a Site,
    env: Environment<'static>,
    /// None: render every page.
    keys: Option<&'a PageKeys>,
    cache: &'a LayoutCache,
    index: maps::MapIndex<'a>,
    /// Up to 50 alarms per agent id, in log order.
    alarms_of: HashMap<&'a str, Vec<&'a AlarmView>>,
    cluster_by_id: HashMap<&'a str, &'a ClusterView>,
    stale_after: i64,
    /// The links between clusters, for fleets too large for one agent
    /// matrix.
    cluster_links: Option<matrix::ClusterLinks>,
}

impl Renderer<'_> {
    fn render(&self, page: Page) -> anyhow::Result<SiteFile> {
        match page {
            Page::Index => self.index(),
            Page::Problems => self.problems(),
            Page::Data => {
                let page = self.page("data.html", self.common("", "data"))?;
                Ok(SiteFile::new("data.html", page))
            }
            Page::Map => self.map(),
            Page::Matrix => self.matrix(),
            Page::Alarms(p) => self.alarms(p),
            Page::AgentList(p) => self.agent_list(p),
            Page::Cluster(c) => self.cluster(c),
            Page::Pair(k) => self.pair(k),
            Page::Agent(i) => self.agent(&self.site.agents[i]),
        }
    }

    /// What every page gets.
    fn common(&self, root: &str, nav: &str) -> Value {
        let now = self.site.generated_at;
        context! {
            // Pages below the root show no generation time or relative
            // ages, so an unchanged agent's page is byte-for-byte the same
            // from build to build (and is linked, not rewritten).
            stable => !root.is_empty(),
            root => root,
            nav => nav,
            generated_iso => iso_time(now),
            generated_human => human_time(now),
            now => now,
            stale_after => self.stale_after,
            revealed => self.site.addresses_revealed,
        }
    }

    fn page(&self, template: &str, ctx: Value) -> anyhow::Result<Vec<u8>> {
        Ok(self.env.get_template(template)?.render(ctx)?.into_bytes())
    }

    fn svg(&self, graph: &Option<maps::SvgGraph>) -> anyhow::Result<Value> {
        let text = match graph {
            Some(g) => self.env.get_template("graph.svg")?.render(context! { g => v(g) })?,
            None => String::new(),
        };
        Ok(Value::from_safe_string(text))
    }

    /// The key of a page rendered from `inputs` (and the view's settings),
    /// when keys are kept.
    fn key(&self, inputs: impl Hash) -> Option<u64> {
        self.keys.map(|k| k.key((self.site.addresses_revealed, inputs)))
    }

    /// The page at `path` as the previous build has it, if its key did
    /// not change.
    fn previous(&self, path: &str, key: Option<u64>) -> Option<SiteFile> {
        let (keys, key) = (self.keys?, key?);
        keys.unchanged(path, key).then(|| SiteFile {
            path: path.to_string(),
            contents: Contents::Previous,
            key: Some(key),
        })
    }

    fn index(&self) -> anyhow::Result<SiteFile> {
        let site = self.site;
        let newest: Vec<_> = site.alarms.iter().filter(|a| a.state == "active").take(10).collect();
        let page = self.page(
            "index.html",
            context! {
                ..self.common("", "overview"),
                ..context! {
                    summary => v(&site.summary),
                    agents => v(problems_first(site).take(INDEX_AGENTS).map(AgentRow::from).collect::<Vec<_>>()),
                    list_pages => agent_list_pages(site),
                    list_first => agent_list_path(1),
                    newest_alarms => v(newest),
                    clusters => v(&site.clusters),
                    problems => v(&site.problems),
                }
            },
        )?;
        Ok(SiteFile::new("index.html", page))
    }

    /// The lists behind the overview's problem lines and counts.
    fn problems(&self) -> anyhow::Result<SiteFile> {
        let site = self.site;
        let p = &site.problems;
        // Bounded, so the page stays small however much is wrong; the full
        // lists are the agent list pages and the JSON.
        let agents = |list: &[usize]| {
            let rows: Vec<_> =
                list.iter().take(PROBLEM_ROWS).map(|&i| self.problem_agent(i)).collect();
            context! { rows, total => list.len() }
        };
        let links = |list: &[usize]| {
            let rows: Vec<_> =
                list.iter().take(PROBLEM_ROWS).map(|&l| self.problem_link(l)).collect();
            context! { rows, total => list.len() }
        };
        let page = self.page(
            "problems.html",
            context! {
                ..self.common("", "problems"),
                ..context! {
                    problems => v(p),
                    all_agents => if agent_list_pages(site) > 0 { agent_list_path(1) } else { "index.html".to_string() },
                    silent => agents(&p.silent),
                    relay => agents(&p.relay),
                    links_down => links(&p.links_down),
                    links_unknown => links(&p.links_unknown),
                    links_stale => links(&p.links_stale),
                    links_one_sided => links(&p.links_one_sided),
                }
            },
        )?;
        Ok(SiteFile::new("problems.html", page))
    }

    fn problem_agent(&self, i: usize) -> Value {
        let a = &self.site.agents[i];
        let cluster = self.cluster_by_id.get(a.cluster.as_str());
        let via = a.via_agent.as_deref().and_then(|id| self.site.agent(id));
        context! {
            page => a.page.clone(),
            hostname => a.hostname.clone(),
            status => a.status.as_str(),
            cluster_page => cluster.map(|c| c.page.clone()),
            cluster_label => cluster.map(|c| c.label.clone()),
            last_seen => a.last_seen,
            relay_hops => a.relay_hops,
            via_page => via.map(|v| v.page.clone()),
            via_hostname => via.map(|v| v.hostname.clone()),
            alarms_active => a.alarms_active,
        }
    }

    fn problem_link(&self, l: usize) -> Value {
        let link = &self.site.links[l];
        let end = |id: &str| match self.site.agent(id) {
            Some(a) => (a.page.clone(), a.hostname.clone(), a.status.as_str()),
            None => (String::new(), id.to_string(), "silent"),
        };
        let ((a_page, a_name, a_status), (b_page, b_name, b_status)) = (end(&link.a), end(&link.b));
        context! {
            a_page, a_name, a_status, b_page, b_name, b_status,
            health => link.health.as_str(),
            both_ends => link.both_ends,
            handshake_age => link.handshake_age,
        }
    }

    fn map(&self) -> anyhow::Result<SiteFile> {
        let overview = maps::overview(self.site, self.cache, 0);
        let page = self.page(
            "map.html",
            context! {
                ..self.common("", "map"),
                ..context! {
                    svg => self.svg(&overview)?,
                    clusters => v(&self.site.clusters),
                    engine => overview.as_ref().map(|g| g.engine.clone()),
                }
            },
        )?;
        Ok(SiteFile::new("map.html", page))
    }

    /// One map (and, for big fleets, one matrix) per cluster.
    fn cluster(&self, c: usize) -> anyhow::Result<SiteFile> {
        let site = self.site;
        let cl = &site.clusters[c];
        let graph = &maps::cluster(site, &self.index, c, self.cache, 1);
        let members: Vec<AgentRow> =
            cl.agents.iter().map(|&i| AgentRow::from(&site.agents[i])).collect();
        let grouped = site.agents.len() > FULL_MATRIX_MAX;
        let rows = if grouped {
            matrix::agent_matrix(site, &cl.agents, &cl.agents)
        } else {
            matrix::AgentMatrix::default()
        };
        let key = self.key((cl, graph, &members, &rows));
        if let Some(same) = self.previous(&cl.page, key) {
            return Ok(same);
        }
        let page = self.page(
            "cluster.html",
            context! {
                ..self.common("../", "map"),
                ..context! {
                    as_of => cl.agents.iter().map(|&i| site.agents[i].last_seen).max(),
                    cluster => v(cl),
                    svg => self.svg(graph)?,
                    members => v(members),
                    matrix => v(rows),
                    engine => graph.as_ref().map(|g| g.engine.clone()),
                }
            },
        )?;
        Ok(SiteFile { key, ..SiteFile::new(cl.page.clone(), page) })
    }

    /// The agent matrix, or for a large fleet the cluster matrix.
    fn matrix(&self) -> anyhow::Result<SiteFile> {
        let site = self.site;
        let all: Vec<usize> = (0..site.agents.len()).collect();
        let (agents, clusters) = match &self.cluster_links {
            Some(links) => (matrix::AgentMatrix::default(), Some(links.matrix(site))),
            None => (matrix::agent_matrix(site, &all, &all), None),
        };
        let page = self.page(
            "matrix.html",
            context! {
                ..self.common("", "matrix"),
                ..context! {
                    matrix => v(agents),
                    grouped => clusters.is_some(),
                    cluster_matrix => v(clusters),
                    clusters => v(matrix::natural_clusters(&site.clusters)),
                }
            },
        )?;
        Ok(SiteFile::new("matrix.html", page))
    }

    /// The agent matrix of a pair of clusters: the first's agents by the
    /// second's.
    fn pair(&self, k: usize) -> anyhow::Result<SiteFile> {
        let links = self.cluster_links.as_ref().expect("pair pages only with cluster links");
        let p = &links.pair_pages()[k];
        let (rows, info) = links.pair(self.site, p);
        let key = self.key((&rows, &info));
        if let Some(same) = self.previous(&p.path, key) {
            return Ok(same);
        }
        let page = self.page(
            "pair.html",
            context! {
                ..self.common("../", "matrix"),
                ..context! { matrix => v(rows), pair => v(info) }
            },
        )?;
        Ok(SiteFile { key, ..SiteFile::new(p.path.clone(), page) })
    }

    /// Alarm log page `p`: active first (all of them), then resolved,
    /// paginated.
    fn alarms(&self, p: usize) -> anyhow::Result<SiteFile> {
        let site = self.site;
        let active: Vec<_> = site.alarms.iter().filter(|a| a.state == "active").collect();
        let history: Vec<_> = site.alarms.iter().filter(|a| a.state != "active").collect();
        let pages = history.len().div_ceil(ALARMS_PER_PAGE).max(1);
        let chunk: Vec<_> =
            history.iter().skip((p - 1) * ALARMS_PER_PAGE).take(ALARMS_PER_PAGE).collect();
        let (path, root) = if p == 1 {
            ("alarms.html".to_string(), "")
        } else {
            (format!("alarms/page-{p}.html"), "../")
        };
        // Pages after the first are below the root: no clock on them.
        let key =
            if p > 1 { self.key((p, pages, active.len(), &chunk, history.len())) } else { None };
        if let Some(same) = self.previous(&path, key) {
            return Ok(same);
        }
        let page_link = |q: usize| {
            if q == 1 {
                format!("{root}alarms.html")
            } else {
                format!("{root}alarms/page-{q}.html")
            }
        };
        let page = self.page(
            "alarms.html",
            context! {
                ..self.common(root, "alarms"),
                ..context! {
                    active => v(if p == 1 { active.clone() } else { Vec::new() }),
                    active_total => active.len(),
                    silences => v(if p == 1 { site.silences.clone() } else { Vec::new() }),
                    windows => v(if p == 1 { site.windows.clone() } else { Vec::new() }),
                    history => v(chunk),
                    history_total => history.len(),
                    page => p,
                    pages => pages,
                    prev => (p > 1).then(|| page_link(p - 1)),
                    next => (p < pages).then(|| page_link(p + 1)),
                    first_row => (p - 1) * ALARMS_PER_PAGE + 1,
                }
            },
        )?;
        Ok(SiteFile { key, ..SiteFile::new(path, page) })
    }

    /// Page `p` of the full agent list, in the overview's order. Below the
    /// root, so without the clock: unchanged pages keep their key.
    fn agent_list(&self, p: usize) -> anyhow::Result<SiteFile> {
        let site = self.site;
        let pages = agent_list_pages(site);
        let skip = (p - 1) * AGENTS_PER_LIST_PAGE;
        let rows: Vec<AgentRow> = problems_first(site)
            .skip(skip)
            .take(AGENTS_PER_LIST_PAGE)
            .map(AgentRow::from)
            .collect();
        let path = agent_list_path(p);
        let key = self.key((p, pages, &rows));
        if let Some(same) = self.previous(&path, key) {
            return Ok(same);
        }
        let link = |q: usize| format!("../{}", agent_list_path(q));
        let page = self.page(
            "agent_list.html",
            context! {
                ..self.common("../", "overview"),
                ..context! {
                    // The newest report listed, for the page's "data as of"
                    // and the stale warning (the page shows no clock).
                    as_of => rows.iter().map(|r| r.last_seen).max(),
                    total => site.agents.len(),
                    first_row => skip + 1,
                    last_row => skip + rows.len(),
                    agents => v(rows),
                    page => p,
                    pages => pages,
                    prev => (p > 1).then(|| link(p - 1)),
                    next => (p < pages).then(|| link(p + 1)),
                }
            },
        )?;
        Ok(SiteFile { key, ..SiteFile::new(path, page) })
    }

    fn agent(&self, a: &AgentView) -> anyhow::Result<SiteFile> {
        let alarms = self.alarms_of.get(a.agent_id.as_str()).cloned().unwrap_or_default();
        let via = a.via_agent.as_deref().and_then(|v| self.site.agent(v)).map(AgentRow::from);
        let cluster = self.cluster_by_id.get(a.cluster.as_str()).copied();
        let key = self.key((a, &via, &alarms, cluster));
        if let Some(same) = self.previous(&a.page, key) {
            return Ok(same);
        }
        let spark_tpl = self.env.get_template("sparkline.svg")?;
        let sparks: Vec<String> = sparklines(a)
            .iter()
            .map(|s| spark_tpl.render(context! { s => v(s) }))
            .collect::<Result<_, _>>()?;
        let page = self.page(
            "agent.html",
            context! {
                ..self.common("../", "agents"),
                ..context! {
                    as_of => a.last_seen,
                    a => v(a),
                    via => v(via),
                    alarms => v(alarms),
                    sparklines => sparks.into_iter().map(Value::from_safe_string).collect::<Vec<_>>(),
                    cluster => v(cluster),
                }
            },
        )?;
        Ok(SiteFile { key, ..SiteFile::new(a.page.clone(), page) })
    }
}

/// Pages of the full agent list: none while the overview lists every
/// agent.
fn agent_list_pages(site: &Site) -> usize {
    if site.agents.len() <= INDEX_AGENTS {
        0
    } else {
        site.agents.len().div_ceil(AGENTS_PER_LIST_PAGE)
    }
}

fn agent_list_path(p: usize) -> String {
    format!("list/agents-{p}.html")
}

/// The agents in the order lists show them: silent first, then reached
/// only through relays, then with active alarms or unhealthy peers, then
/// the rest; by name (natural order) within each.
fn problems_first(site: &Site) -> impl Iterator<Item = &AgentView> {
    let urgency = |a: &AgentView| match a.status {
        kattila_fleet::AgentStatus::Silent => 0,
        kattila_fleet::AgentStatus::Relay => 1,
        _ if a.alarms_active > 0 || a.peers_healthy < a.peers_total => 2,
        _ => 3,
    };
    let mut order: Vec<&AgentView> = site.agents.iter().collect();
    order.sort_by(|x, y| {
        urgency(x)
            .cmp(&urgency(y))
            .then_with(|| crate::natural::natural_cmp(&x.hostname, &y.hostname))
            .then_with(|| x.agent_id.cmp(&y.agent_id))
    });
    order.into_iter()
}

/// What lists of agents show.
#[derive(Serialize)]
struct AgentRow<'a> {
    agent_id: &'a str,
    hostname: &'a str,
    page: &'a str,
    status: &'a str,
    agent_version: &'a str,
    last_seen: i64,
    last_seen_age: i64,
    relay_hops: i64,
    cluster: &'a str,
    peers_total: usize,
    peers_healthy: usize,
    alarms_active: usize,
}

/// All but the clock-relative `last_seen_age`, which pages below the root
/// never show (see `AgentView`'s `Hash`).
impl Hash for AgentRow<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let AgentRow {
            agent_id,
            hostname,
            page,
            status,
            agent_version,
            last_seen,
            last_seen_age: _,
            relay_hops,
            cluster,
            peers_total,
            peers_healthy,
            alarms_active,
        } = self;
        (agent_id, hostname, page, status, agent_version, last_seen, relay_hops).hash(h);
        (cluster, peers_total, peers_healthy, alarms_active).hash(h);
    }
}

impl<'a> From<&'a AgentView> for AgentRow<'a> {
    fn from(a: &'a AgentView) -> Self {
        AgentRow {
            agent_id: &a.agent_id,
            hostname: &a.hostname,
            page: &a.page,
            status: a.status.as_str(),
            agent_version: &a.agent_version,
            last_seen: a.last_seen,
            last_seen_age: a.last_seen_age,
            relay_hops: a.relay_hops,
            cluster: &a.cluster,
            peers_total: a.peers_total,
            peers_healthy: a.peers_healthy,
            alarms_active: a.alarms_active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_templates_are_escaped_too() {
        let mut env = environment(None).unwrap();
        env.add_template("t.svg", "<svg><title>{{ name }}</title><a href=\"{{ name }}\"/></svg>")
            .unwrap();
        let out =
            env.get_template("t.svg").unwrap().render(context! { name => "<b>&\"'" }).unwrap();
        assert_eq!(
            out,
            "<svg><title>&lt;b&gt;&amp;&quot;&#x27;</title><a href=\"&lt;b&gt;&amp;&quot;&#x27;\"/></svg>"
        );
        // And the real map template escapes what it draws.
        let g = maps::SvgGraph {
            title: "<t>".into(),
            width: 10.0,
            height: 10.0,
            engine: "x".into(),
            nodes: vec![maps::SvgNode {
                x: 1.0,
                y: 1.0,
                label: "<script>alert(1)</script>".into(),
                sublabel: "\"onload=".into(),
                title: "</title><script>".into(),
                href: Some("a\"b.html".into()),
                class: "agent up".into(),
                mark: "●".into(),
            }],
            edges: vec![],
        };
        let out = environment(None)
            .unwrap()
            .get_template("graph.svg")
            .unwrap()
            .render(context! { g => v(g) })
            .unwrap();
        assert!(!out.contains("<script>") && !out.contains("</title><script"), "{out}");
        assert!(!out.contains("\"onload="), "{out}");
        assert!(out.contains("&lt;script&gt;"));
    }

    #[test]
    fn every_printed_value_shows_hidden_characters_and_isolates_right_to_left_text() {
        let mut env = environment(None).unwrap();
        // As a custom template might print them: in text, in an attribute,
        // whole lists, and filtered.
        env.add_template(
            "t.html",
            "<p title=\"{{ name }}\">{{ name }} — key {{ key }}</p>{{ list }}|{{ name|upper }}|{{ n }}|{{ missing }}",
        )
        .unwrap();
        let out = env
            .get_template("t.html")
            .unwrap()
            .render(context! { name => "wg0\u{202e}\u{0}שרת", key => "K=", list => vec!["a\u{1b}"], n => 5 })
            .unwrap();
        let name = "\u{2068}wg0⟨U+202E⟩␀שרת\u{2069}";
        let (page, rest) = out.split_once("</p>").unwrap();
        assert_eq!(page, format!("<p title=\"{name}\">{name} — key K="));
        let [list, upper, n, missing] = rest.split('|').collect::<Vec<_>>()[..] else {
            panic!("{rest}")
        };
        assert!(list.contains('a') && !list.contains('\u{1b}'), "{list:?}");
        assert_eq!(upper, "\u{2068}WG0⟨U+202E⟩␀שרת\u{2069}");
        assert_eq!((n, missing), ("5", ""));
    }

    #[test]
    fn templates_can_be_overridden_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "custom {{ summary.agents_total }}").unwrap();
        let env = environment(Some(dir.path())).unwrap();
        let out = env
            .get_template("index.html")
            .unwrap()
            .render(context! { summary => context! { agents_total => 3 } })
            .unwrap();
        assert_eq!(out, "custom 3");
        // Others stay embedded.
        assert!(env.get_template("agent.html").is_ok());
    }
}
