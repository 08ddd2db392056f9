//! Where a workload's source comes from, in order: the content-addressed
//! cache, `--source FILE`, a local mirror directory (`VMLAB_SOURCES` or
//! `sources_dir` in `vmlab.toml`), then a download: from an HTTP mirror
//! (`VMLAB_SOURCES_URL` or `sources_url`) when one is set, else from the
//! upstream URL. Whatever the origin, the content must have the manifest's
//! SHA-256 and passes through the cache, so a wrong file is refused and
//! nothing bad is kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::manifest::{Source, Workload};
use crate::download::cache::{Cache, Expected, Mismatch, file_matches};
use crate::download::http;
use crate::paths::Home;

/// Where the source was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The workload's own folder (our programs).
    Folder,
    Cache,
    /// `--source FILE`.
    Given,
    Mirror,
    Downloaded,
}

/// As `run.json` spells it.
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Folder => "folder",
            Self::Cache => "cache",
            Self::Given => "given",
            Self::Mirror => "mirror",
            Self::Downloaded => "downloaded",
        })
    }
}

/// A located source: a verified archive in the cache, or the workload folder.
#[derive(Debug, Clone)]
pub struct Located {
    pub path: PathBuf,
    pub origin: Origin,
}

/// What the user offers besides the cache and the network.
#[derive(Debug, Clone, Default)]
pub struct Offered {
    /// `--source FILE`.
    pub file: Option<PathBuf>,
    /// A directory holding upstream archives under their usual names.
    pub mirror: Option<PathBuf>,
    /// A base URL serving them, used instead of upstream.
    pub mirror_url: Option<String>,
}

/// Finds (or downloads) the source of `workload`.
pub fn locate(
    home: &Home,
    workload: &Workload,
    offered: &Offered,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Located> {
    locate_with(home, workload, offered, &http::agent(), progress)
}

fn locate_with(
    home: &Home,
    workload: &Workload,
    offered: &Offered,
    agent: &ureq::Agent,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Located> {
    let Source::Upstream {
        url,
        sha256,
        top_dir,
    } = &workload.source
    else {
        return Ok(Located {
            path: workload.dir.clone(),
            origin: Origin::Folder,
        });
    };
    let cache = Cache::new(home);
    let expected = Expected::Sha256(sha256.clone());
    let cached = cache.path(sha256);
    let found = |origin| Located {
        path: cached.clone(),
        origin,
    };
    if cached.is_file() && file_matches(&cached, &expected)? {
        return Ok(found(Origin::Cache));
    }
    let file_name = url.rsplit('/').next().unwrap_or(url);
    let names = [file_name.to_string(), format!("{top_dir}.tar.gz")];
    if let Some(file) = &offered.file {
        let remedy = format!("pass the {file_name} of {url} with --source");
        store(&cache, file, &expected, &remedy)
            .with_context(|| format!("`{}`: --source {}", workload.name, file.display()))?;
        return Ok(found(Origin::Given));
    }
    if let Some(dir) = &offered.mirror
        && let Some(file) = in_mirror(dir, &names, &expected)?
    {
        store(&cache, &file, &expected, "")?;
        return Ok(found(Origin::Mirror));
    }
    // From the HTTP mirror under each usual name, or from upstream.
    let urls: Vec<String> = match &offered.mirror_url {
        Some(base) => names
            .iter()
            .map(|n| format!("{}/{n}", base.trim_end_matches('/')))
            .collect(),
        None => vec![url.clone()],
    };
    let remedy = format!(
        "download {file_name} (sha256 {sha256}) from {url} where you can and pass it with --source FILE, or set VMLAB_SOURCES (or `sources_dir` in vmlab.toml) to a directory holding it"
    );
    let mut last = None;
    for candidate in &urls {
        match http::download(agent, &cache, candidate, &expected, &remedy, progress) {
            Ok(digests) => {
                cache.record(candidate, &digests)?;
                return Ok(found(Origin::Downloaded));
            }
            Err(e) if e.downcast_ref::<Mismatch>().is_some() => {
                return Err(e.context(format!("`{}` needs its source", workload.name)));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .expect("at least one URL")
        .context(format!("`{}` needs its source", workload.name)))
}

/// Copies `file` into the cache if it has the expected digest.
fn store(cache: &Cache, file: &Path, expected: &Expected, remedy: &str) -> Result<()> {
    let mut reader =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    cache.store(
        &mut reader,
        &file.display().to_string(),
        Some((expected, remedy)),
        &mut |_| {},
    )?;
    Ok(())
}

/// A file of `dir` with the expected content: first under the usual names,
/// then any `.tar.gz` in it (mirrors name archives differently).
fn in_mirror(dir: &Path, names: &[String], expected: &Expected) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        bail!(
            "source mirror {} is not a directory; fix VMLAB_SOURCES or `sources_dir`",
            dir.display()
        );
    }
    for name in names {
        let path = dir.join(name);
        if path.is_file() && file_matches(&path, expected)? {
            return Ok(Some(path));
        }
    }
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    others.sort();
    for path in others {
        if file_matches(&path, expected)? {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn origins_print_as_run_json_spells_them() {
        use Origin::*;
        for origin in [Folder, Cache, Given, Mirror, Downloaded] {
            assert_eq!(serde_json::to_value(origin).unwrap(), origin.to_string());
        }
    }
    use crate::download::digest;
    use crate::testutil::Server;

    const BODY: &[u8] = b"pretend this is a release tarball";

    const UPSTREAM: &str = "https://example.invalid/releases/w-1.tar.gz";

    fn workload() -> Workload {
        let url = UPSTREAM;
        let dir = tempfile::tempdir().unwrap().keep();
        let manifest = format!(
            "name = \"w\"\ndescription = \"d\"\nkind = \"benchmark\"\n[source]\nurl = \"{url}\"\nsha256 = \"{}\"\ntop_dir = \"w-top\"\n[build]\ncompiler = \"gcc\"\ncommands = [[\"make\"]]\nbinary = \"w\"\n[run]\nargv = [\"{{binary}}\"]\n[output]\nparser = \"stream\"\nfiles = []\n",
            digest::sha256(BODY)
        );
        let wdir = dir.join("w");
        std::fs::create_dir_all(&wdir).unwrap();
        std::fs::write(wdir.join("workload.toml"), manifest).unwrap();
        crate::workload::load(&dir, "w").unwrap()
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .proxy(None)
            .build()
            .new_agent()
    }

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        (dir, home)
    }

    /// An HTTP mirror on 127.0.0.1 serving `path` → `body`.
    fn mirror(path: &str, body: &[u8]) -> (Server, Offered) {
        let server = Server::start(HashMap::from([(path.to_string(), body.to_vec())]));
        let offered = Offered {
            mirror_url: Some(format!("http://{}/", server.addr)),
            ..Offered::default()
        };
        (server, offered)
    }

    #[test]
    fn download_then_cache_then_offline() {
        // Served under the top directory's name: the mirror is tried under both.
        let (server, offered) = mirror("/w-top.tar.gz", BODY);
        let (_d, home) = home();
        let w = workload();
        let first = locate_with(&home, &w, &offered, &agent(), &mut |_, _| {}).unwrap();
        assert_eq!(first.origin, Origin::Downloaded);
        assert_eq!(std::fs::read(&first.path).unwrap(), BODY);
        assert_eq!(server.requests(), ["/w-1.tar.gz", "/w-top.tar.gz"]);
        drop(server);
        let again = locate_with(&home, &w, &offered, &agent(), &mut |_, _| {}).unwrap();
        assert_eq!((again.origin, again.path), (Origin::Cache, first.path));
    }

    #[test]
    fn a_wrong_download_is_refused_and_nothing_cached() {
        let (server, offered) = mirror("/w-1.tar.gz", b"evil");
        let (_d, home) = home();
        let err = locate_with(&home, &workload(), &offered, &agent(), &mut |_, _| {}).unwrap_err();
        let err = format!("{err:#}");
        let url = format!("http://{}/w-1.tar.gz", server.addr);
        assert!(
            err.starts_with(&format!(
                "`w` needs its source: checksum mismatch for {url}: expected sha256 "
            )),
            "{err}"
        );
        assert!(crate::testutil::files_in(&home.cache_dir()).is_empty());
    }

    #[test]
    fn given_file_and_mirror_are_verified() {
        let (dir, home) = home();
        let w = workload();
        let bad = dir.path().join("bad.tar.gz");
        std::fs::write(&bad, b"not it").unwrap();
        let offered = Offered {
            file: Some(bad.clone()),
            ..Offered::default()
        };
        let err = locate_with(&home, &w, &offered, &agent(), &mut |_, _| {}).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.starts_with("`w`: --source "), "{err}");
        assert!(err.contains("checksum mismatch"), "{err}");

        // A mirror whose archive has another name is still found by content.
        let mirror = dir.path().join("mirror");
        std::fs::create_dir(&mirror).unwrap();
        std::fs::write(mirror.join("renamed.tar.gz"), BODY).unwrap();
        std::fs::write(mirror.join("w-1.tar.gz"), b"stale copy").unwrap();
        let offered = Offered {
            mirror: Some(mirror),
            ..Offered::default()
        };
        let got = locate_with(&home, &w, &offered, &agent(), &mut |_, _| {}).unwrap();
        assert_eq!(got.origin, Origin::Mirror);
        assert_eq!(std::fs::read(got.path).unwrap(), BODY);
    }

    #[test]
    fn offline_with_nothing_says_which_file_and_how_to_give_it() {
        let (_d, home) = home();
        // A mirror on loopback where nothing listens: offline, nothing cached.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let offered = Offered {
            mirror_url: Some(base.clone()),
            ..Offered::default()
        };
        let err = locate_with(&home, &workload(), &offered, &agent(), &mut |_, _| {}).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.starts_with(&format!(
                "`w` needs its source: cannot reach {base}/w-top.tar.gz: "
            )),
            "{err}"
        );
        assert!(
            err.ends_with(&format!(
                "check your network, or download w-1.tar.gz (sha256 {}) from {UPSTREAM} where you can and pass it with --source FILE, or set VMLAB_SOURCES (or `sources_dir` in vmlab.toml) to a directory holding it",
                digest::sha256(BODY)
            )),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
