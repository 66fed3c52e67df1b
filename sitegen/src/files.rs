//! One file of a build, as rendering and the JSON API make it and
//! publishing writes it.

/// One output file.
#[derive(Debug)]
pub struct SiteFile {
    /// Relative to the site root.
    pub path: String,
    pub contents: Contents,
    /// Set on pages that depend on the view alone, never on the clock (the
    /// cluster, agent and older alarm log pages): a hash of everything
    /// they are rendered from. The next build takes such a page from the
    /// previous build when its key did not change, instead of rendering it
    /// again.
    pub key: Option<u64>,
}

#[derive(Debug)]
pub enum Contents {
    Bytes(Vec<u8>),
    /// Not rendered: the same as this path in the previous build (which
    /// published it with the same key).
    Previous,
}

impl SiteFile {
    pub fn new(path: impl Into<String>, bytes: Vec<u8>) -> SiteFile {
        SiteFile { path: path.into(), contents: Contents::Bytes(bytes), key: None }
    }
}
