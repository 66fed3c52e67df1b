//! `sitegen`: turns the receiver's database into a static site. It opens
//! the database read-only, reads one consistent snapshot per build, turns
//! it into an anonymised view, renders pages, maps and JSON from that view
//! and publishes the result atomically. It makes no network calls (except
//! `git push` when asked to).
#![forbid(unsafe_code)]

pub mod anon;
pub mod api;
mod build;
pub mod changes;
pub mod cli;
pub mod cryptopan;
pub mod files;
pub mod format;
pub mod git;
pub mod layout;
pub mod maps;
pub mod matrix;
pub mod natural;
pub mod pseudonym;
pub mod publish;
pub mod render;
pub mod routing;
pub mod shown;
pub mod view;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use anon::Anon;
use changes::{Changes, StateDigest};
use layout::LayoutCache;

/// What one build did, for the one-line report.
#[derive(Debug)]
pub struct BuildReport {
    pub agents: usize,
    pub files: usize,
    pub published: PathBuf,
    pub elapsed: Duration,
    /// Time spent reading the database.
    pub read_time: Duration,
    /// Time spent building the view, rendering files and writing them.
    pub render_time: Duration,
    /// Time spent switching the build in (files are written as they are
    /// rendered, in `render_time`).
    pub publish_time: Duration,
    /// Files unchanged since the previous build (linked, not written).
    pub files_unchanged: usize,
    pub layouts_computed: usize,
    pub layouts_cached: usize,
    pub layout_time: Duration,
    /// What changed in the fleet's state since the previous build.
    pub changes: Changes,
    pub digest: Arc<StateDigest>,
}

impl BuildReport {
    /// The one line printed per build.
    pub fn line(&self) -> String {
        format!(
            "built {} agents, {} files ({} changed) in {:.0?} ({}; layouts: {} cached, {} computed in {:.0?}) -> {}",
            self.agents,
            self.files,
            self.files - self.files_unchanged,
            self.elapsed,
            self.changes.describe(),
            self.layouts_cached,
            self.layouts_computed,
            self.layout_time,
            self.published.display()
        )
    }
}

/// The private working directory of sitegen inside OUT (site key, layout
/// cache, git state). Never published.
pub fn state_dir(out: &Path) -> PathBuf {
    out.join(".sitegen")
}

/// Keeps what successive builds share: the anonymiser (with its memo), the
/// layout cache and the previous state for change reports.
pub struct Builder {
    out: PathBuf,
    anon: Anon,
    cache: LayoutCache,
    render: render::RenderOptions,
    previous: Option<Arc<StateDigest>>,
    publisher: publish::Publisher,
    pages: render::PageKeys,
}

impl Builder {
    /// The fleet state of the last build of an earlier process (`--once`
    /// from cron), so that its change report says what changed since then
    /// instead of "first build". Unreadable or missing: none.
    pub fn recall_previous_state(&mut self) {
        let path = state_dir(&self.out).join("last-state.json");
        if let Some(digest) =
            std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<StateDigest>(&b).ok())
        {
            self.previous = Some(Arc::new(digest));
        }
    }

    /// Keeps the fleet state of the last build for the next process (see
    /// [`Builder::recall_previous_state`]); written whole or not at all.
    pub fn keep_state(&self) -> anyhow::Result<()> {
        let Some(digest) = &self.previous else { return Ok(()) };
        let dir = state_dir(&self.out);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(".last-state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(digest.as_ref())?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join("last-state.json"))?;
        Ok(())
    }

    pub fn new(out: &Path, anon: Anon, render: render::RenderOptions) -> Builder {
        Builder {
            out: out.to_path_buf(),
            anon,
            cache: LayoutCache::new(Some(state_dir(out).join("layouts"))),
            render,
            previous: None,
            publisher: publish::Publisher::default(),
            pages: render::PageKeys::default(),
        }
    }

    /// Reads one snapshot through `conn`, renders and publishes it.
    pub fn build(
        &mut self,
        conn: &kattila_store::Connection,
        now: i64,
    ) -> anyhow::Result<BuildReport> {
        let started = Instant::now();
        let snap = kattila_store::snapshot::FleetSnapshot::read(conn, now)?;
        let read_time = started.elapsed();
        if !self.publisher.has_previous() {
            self.pages.forget();
        }
        let staging = self.publisher.begin(&self.out)?;
        let (files, digest, changes) = match self.render_files(&snap, now, &staging) {
            Ok(made) => made,
            Err(e) => {
                staging.abandon();
                self.pages.forget();
                return Err(e);
            }
        };
        let rendered = started.elapsed();
        let published = match self.publisher.finish(&self.out, staging, &files) {
            Ok(published) => published,
            Err(e) => {
                self.pages.forget();
                return Err(e);
            }
        };
        self.pages.published_keys(files.iter().map(|f| (f.path.as_str(), f.key)));
        let publish_time = started.elapsed() - rendered;
        self.previous = Some(digest.clone());
        Ok(BuildReport {
            agents: snap.agents.len(),
            files: files.len(),
            published,
            elapsed: started.elapsed(),
            read_time,
            render_time: rendered - read_time,
            publish_time,
            files_unchanged: self.publisher.reused,
            layouts_computed: self.cache.misses(),
            layouts_cached: self.cache.hits(),
            layout_time: self.cache.compute_time(),
            changes,
            digest,
        })
    }

    /// Renders every file of the site for `snap` into `staging` (written as
    /// it is made, not yet published), and returns what was written, the
    /// state digest of the view and what changed since the previous build.
    /// Pages that did not change since the previous build are
    /// [`files::Contents::Previous`].
    fn render_files(
        &mut self,
        snap: &kattila_store::snapshot::FleetSnapshot,
        now: i64,
        staging: &publish::Staging,
    ) -> anyhow::Result<(Vec<publish::Placed>, Arc<StateDigest>, Changes)> {
        let site = view::Site::build(snap, &mut self.anon, now);
        self.cache.begin();
        // The JSON files and the state digest are made beside the pages.
        let (cache, pages, previous) = (&self.cache, &self.pages, self.previous.as_deref());
        let place = |f: files::SiteFile| staging.place(&f);
        let (files, (api_files, (digest, changes))) = rayon::join(
            || render::render_site_into(&site, cache, &self.render, pages, &place),
            || {
                rayon::join(
                    || api::files_into(&site, &place),
                    || {
                        let digest = StateDigest::of(&site);
                        let changes = Changes::between(previous, &digest);
                        (Arc::new(digest), changes)
                    },
                )
            },
        );
        self.cache.finish();
        let mut files = files?;
        files.extend(api_files?);
        Ok((files, digest, changes))
    }
}

/// Reads the database at `db`, renders the site and publishes it under
/// `out`, with the site key from `OUT/.sitegen/site-key` (created if
/// absent).
pub fn build_once(db: &Path, out: &Path, now: i64) -> anyhow::Result<BuildReport> {
    let conn = kattila_store::open_read_only(db)?;
    let key = anon::SiteKey::load_or_create(&state_dir(out).join("site-key"))?;
    let mut builder = Builder::new(out, Anon::new(&key), Default::default());
    builder.build(&conn, now)
}
