//! `vmlab image fetch`: official cloud images, verified and cached.
//!
//! For Alpine this is the nocloud BIOS "tiny" qcow2 published next to a
//! `.sha512` file. The checksum file is fetched first, then the image is
//! streamed into the content-addressed cache (see [`crate::download::cache`]) and
//! verified, then installed as a version of image `alpine-<version>`. A fetch of a version
//! already in the cache downloads only the checksum file, or nothing at all
//! when the mirror cannot be reached.

use anyhow::{Result, anyhow, bail};

use super::store::{self as image, Image, Manifest};
use crate::download::cache::{Cache, Expected};
use crate::download::http::{self, GetError};
use crate::paths::Home;

/// Distros `vmlab image fetch` knows how to fetch.
pub const SUPPORTED_DISTROS: &[&str] = &["alpine"];

/// The Alpine version fetched when none is given.
pub const DEFAULT_ALPINE_VERSION: &str = "3.20.3";

/// The official Alpine mirror.
pub const DEFAULT_ALPINE_MIRROR: &str = "https://dl-cdn.alpinelinux.org/alpine";

/// File name of the disk inside the installed image directory.
const DISK: &str = "disk.qcow2";

/// What every mirror error ends with.
const MIRROR_REMEDY: &str = "pass --url with another mirror";

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Only `alpine` for now.
    pub distro: String,
    /// Full version, e.g. `3.20.3`.
    pub version: String,
    /// Mirror base URL; [`DEFAULT_ALPINE_MIRROR`] when `None`.
    pub base_url: Option<String>,
}

/// The installed image, and whether its disk came from the cache.
#[derive(Debug, Clone)]
pub struct FetchOutcome {
    pub image: Image,
    pub cache_hit: bool,
}

/// Downloads (or finds in the cache) the official Alpine nocloud BIOS qcow2,
/// verifies it and installs it as a version of the image `alpine-<version>`.
///
/// `progress` gets (bytes so far, total if the server sent Content-Length)
/// while the image downloads; it is not called on a cache hit.
pub fn fetch(
    home: &Home,
    req: &FetchRequest,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<FetchOutcome> {
    fetch_with(home, req, &http::agent(), progress)
}

/// Name of the installed image for an Alpine version, e.g. `alpine-3.20.3`.
pub fn alpine_image_name(version: &str) -> String {
    format!("alpine-{version}")
}

/// URL of the official Alpine nocloud BIOS qcow2 of `version` (`MAJOR.MINOR.PATCH`)
/// under the mirror `base`. Its checksum is at the same URL plus `.sha512`.
pub fn alpine_image_url(base: &str, version: &str) -> Result<String> {
    let branch = alpine_branch(version)?;
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("mirror URL `{base}` must start with http:// or https://");
    }
    Ok(format!(
        "{base}/v{branch}/releases/cloud/nocloud_alpine-{version}-x86_64-bios-tiny-r0.qcow2"
    ))
}

/// `3.20.3` -> `3.20`; anything but three dot-separated numbers is an error.
fn alpine_branch(version: &str) -> Result<String> {
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !parts.iter().all(numeric) || !(2..=3).contains(&parts.len()) {
        bail!(
            "`{version}` is not an Alpine version; give the full version, e.g. {DEFAULT_ALPINE_VERSION}"
        );
    }
    if parts.len() == 2 {
        bail!(
            "Alpine version `{version}` has no patch level; give the full version, e.g. {version}.0 or {DEFAULT_ALPINE_VERSION} (see https://alpinelinux.org/releases/)"
        );
    }
    Ok(format!("{}.{}", parts[0], parts[1]))
}

/// The SHA-512 from a `.sha512` file: the hex digest, optionally followed by
/// whitespace and the file name (which must then be `file_name`).
fn parse_sha512_file(text: &str, file_name: &str, url: &str) -> Result<String> {
    let mut words = text.split_whitespace();
    let digest = words.next().unwrap_or("");
    if digest.len() != 128 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "checksum file {url} does not hold a SHA-512 digest; the mirror may be broken, {MIRROR_REMEDY}"
        );
    }
    if let Some(named) = words.next()
        && named.trim_start_matches('*') != file_name
    {
        bail!(
            "checksum file {url} is for `{named}`, not `{file_name}`; the mirror may be broken, {MIRROR_REMEDY}"
        );
    }
    Ok(digest.to_ascii_lowercase())
}

fn fetch_with(
    home: &Home,
    req: &FetchRequest,
    agent: &ureq::Agent,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<FetchOutcome> {
    if req.distro != "alpine" {
        bail!(
            "cannot fetch distro `{}`; supported: {}",
            req.distro,
            SUPPORTED_DISTROS.join(", ")
        );
    }
    let base = req.base_url.as_deref().unwrap_or(DEFAULT_ALPINE_MIRROR);
    let url = alpine_image_url(base, &req.version)?;
    let sha_url = format!("{url}.sha512");
    let file_name = url.rsplit('/').next().unwrap_or_default().to_owned();
    let cache = Cache::new(home);
    let mirror_error = |e: GetError, url: &str| {
        let remedy = match e {
            GetError::Status(404) => {
                "check that the version exists on the mirror, or pass --url with another mirror"
            }
            GetError::Unreachable(_) => "pass --url with a reachable mirror",
            GetError::Status(_) => MIRROR_REMEDY,
        };
        anyhow!("{}", e.message(url, remedy))
    };

    // The published checksum, or None when the mirror cannot be reached.
    let published = match http::get_text(agent, &sha_url, 64 * 1024) {
        Ok(text) => Some(parse_sha512_file(&text, &file_name, &sha_url)?),
        Err(e @ GetError::Status(_)) => return Err(mirror_error(e, &sha_url)),
        Err(e @ GetError::Unreachable(_)) => match cache.lookup(&url)? {
            Some(_) => None,
            None => return Err(mirror_error(e, &sha_url)),
        },
    };

    // Reuse cached content when it is still what the mirror publishes (or,
    // offline, what this URL served before), after checking it again.
    let candidate = match &published {
        Some(sha512) => match cache.lookup(&url)? {
            Some(d) if d.sha512 == *sha512 => Some(d),
            _ => cache.find(&Expected::Sha512(sha512.clone()))?,
        },
        None => cache.lookup(&url)?,
    };
    let cached = match candidate {
        Some(d) if cache.verify(&d)? => Some(d),
        _ => None,
    };

    let (digests, cache_hit) = match (cached, published) {
        (Some(d), _) => (d, true),
        (None, Some(sha512)) => {
            let remedy =
                "check that the version exists on the mirror, or pass --url with another mirror";
            let expected = Expected::Sha512(sha512);
            let d = http::download(agent, &cache, &url, &expected, remedy, progress)?;
            (d, false)
        }
        (None, None) => bail!(
            "cannot reach {sha_url} and the cached copy of {url} is missing or corrupt; connect to the network and fetch again"
        ),
    };
    cache.record(&url, &digests)?;

    let name = alpine_image_name(&req.version);
    let staging = image::stage(home, &name)?;
    link_or_copy(&cache.path(&digests.sha256), &staging.dir().join(DISK))?;
    let image = staging.install(&Manifest {
        name,
        disk: DISK.to_owned(),
        kernel: None,
        initrd: None,
        cmdline: None,
        source: url,
        // tiny-cloud installs the seed's keys for Alpine's default user.
        ssh_user: "alpine".into(),
    })?;
    Ok(FetchOutcome { image, cache_hit })
}

/// A hard link when the cache is on the same file system, a copy otherwise.
/// Safe because nothing ever writes a cached file or an installed image.
fn link_or_copy(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(|e| {
            anyhow!(
                "copying {} to {}: {e}; check free space",
                from.display(),
                to.display()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Offline tests: a tiny HTTP server on 127.0.0.1 plays the mirror.

    use crate::testutil::{Server, files_in};
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::time::Duration;

    use sha2::{Digest, Sha256, Sha512};

    use super::*;
    use crate::download::digest::hex;

    const VERSION: &str = "3.20.3";
    const IMAGE_PATH: &str =
        "/alpine/v3.20/releases/cloud/nocloud_alpine-3.20.3-x86_64-bios-tiny-r0.qcow2";
    const FILE_NAME: &str = "nocloud_alpine-3.20.3-x86_64-bios-tiny-r0.qcow2";

    /// A fake qcow2 big enough to take several reads.
    fn fixture() -> Vec<u8> {
        let mut data = b"QFI\xfb".to_vec();
        data.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        data
    }

    fn sha512_file(content: &[u8]) -> Vec<u8> {
        format!("{}  {FILE_NAME}\n", hex(&Sha512::digest(content))).into_bytes()
    }

    /// A mirror serving `image`, with a `.sha512` computed from `checksum_of`.
    fn mirror(image: &[u8], checksum_of: &[u8]) -> Server {
        Server::start(HashMap::from([
            (IMAGE_PATH.to_owned(), image.to_vec()),
            (format!("{IMAGE_PATH}.sha512"), sha512_file(checksum_of)),
        ]))
    }

    /// Like `fetch`, but never through a proxy (tests only talk to 127.0.0.1).
    fn fetch_from(
        home: &Home,
        base: &str,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<FetchOutcome> {
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .new_agent();
        let req = FetchRequest {
            distro: "alpine".into(),
            version: VERSION.into(),
            base_url: Some(base.into()),
        };
        fetch_with(home, &req, &agent, progress)
    }

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        (dir, home)
    }

    /// A loopback address nothing listens on.
    fn dead_base() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/alpine")
    }

    #[test]
    fn image_url_for_alpine() {
        assert_eq!(
            alpine_image_url(DEFAULT_ALPINE_MIRROR, "3.20.3").unwrap(),
            "https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/cloud/nocloud_alpine-3.20.3-x86_64-bios-tiny-r0.qcow2"
        );
        assert_eq!(
            alpine_image_url("http://mirror.example/alpine/", "3.21.10").unwrap(),
            "http://mirror.example/alpine/v3.21/releases/cloud/nocloud_alpine-3.21.10-x86_64-bios-tiny-r0.qcow2"
        );
        assert_eq!(alpine_image_name("3.20.3"), "alpine-3.20.3");
    }

    #[test]
    fn image_url_rejects_bad_versions_and_mirrors() {
        let err = alpine_image_url(DEFAULT_ALPINE_MIRROR, "3.20")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no patch level"), "{err}");
        assert!(err.contains("3.20.3"), "{err}");
        for bad in ["", "3", "3.20.x", "v3.20.3", "3.20.3.1", "3..3", "latest"] {
            let err = alpine_image_url(DEFAULT_ALPINE_MIRROR, bad).unwrap_err();
            assert!(err.to_string().contains("full version"), "{bad}: {err}");
        }
        let err = alpine_image_url("dl-cdn.alpinelinux.org/alpine", "3.20.3").unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
    }

    #[test]
    fn sha512_file_parsing() {
        let digest = "AB".repeat(64);
        let want = "ab".repeat(64);
        let url = "http://m/x.sha512";
        assert_eq!(parse_sha512_file(&digest, FILE_NAME, url).unwrap(), want);
        let with_name = format!("{digest}  {FILE_NAME}\n");
        assert_eq!(parse_sha512_file(&with_name, FILE_NAME, url).unwrap(), want);
        let other = format!("{digest}  other.qcow2\n");
        let err = parse_sha512_file(&other, FILE_NAME, url).unwrap_err();
        assert!(err.to_string().contains("other.qcow2"), "{err}");
        for bad in ["", "<html>not found</html>", &"ab".repeat(32)] {
            let err = parse_sha512_file(bad, FILE_NAME, url).unwrap_err();
            assert!(err.to_string().contains("SHA-512"), "{bad}: {err}");
        }
    }

    #[test]
    fn unsupported_distro_lists_supported_ones() {
        let (_dir, home) = home();
        let req = FetchRequest {
            distro: "debian".into(),
            version: "12".into(),
            base_url: None,
        };
        let err = fetch(&home, &req, &mut |_, _| {}).unwrap_err().to_string();
        assert_eq!(err, "cannot fetch distro `debian`; supported: alpine");
    }

    #[test]
    fn fetch_installs_image_and_fills_cache() {
        let data = fixture();
        let server = mirror(&data, &data);
        let (_dir, home) = home();
        let mut progress = Vec::new();
        let outcome = fetch_from(&home, &server.base(), &mut |n, t| progress.push((n, t))).unwrap();

        assert!(!outcome.cache_hit);
        let url = format!("http://{}{IMAGE_PATH}", server.addr);
        assert_eq!(
            outcome.image.manifest,
            Manifest {
                name: "alpine-3.20.3".into(),
                disk: "disk.qcow2".into(),
                kernel: None,
                initrd: None,
                cmdline: None,
                source: url.clone(),
                ssh_user: "alpine".into(),
            }
        );
        assert_eq!(
            outcome.image.dir,
            home.image_dir("alpine-3.20.3").join(&outcome.image.version)
        );
        assert_eq!(std::fs::read(outcome.image.disk()).unwrap(), data);
        // Visible to the image store.
        let loaded = image::load(&home, "alpine-3.20.3").unwrap();
        assert_eq!(loaded.manifest, outcome.image.manifest);
        assert_eq!(loaded.version, outcome.image.version);

        // Checksum first, then the image, once each.
        assert_eq!(
            server.requests(),
            vec![format!("{IMAGE_PATH}.sha512"), IMAGE_PATH.to_owned()]
        );

        // Cache: exactly one file, named by its SHA-256, indexed by URL.
        let sha256 = hex(&Sha256::digest(&data));
        assert_eq!(files_in(&home.cache_dir()), vec![sha256.clone()]);
        assert_eq!(std::fs::read(home.cache_dir().join(&sha256)).unwrap(), data);
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(home.cache_index()).unwrap()).unwrap();
        assert_eq!(index["entries"][&url]["sha256"], sha256.as_str());
        assert_eq!(
            index["entries"][&url]["sha512"],
            hex(&Sha512::digest(&data)).as_str()
        );

        // Progress: starts at 0, grows, ends at the full size with the total known.
        let len = data.len() as u64;
        assert_eq!(progress.first(), Some(&(0, Some(len))));
        assert_eq!(progress.last(), Some(&(len, Some(len))));
        assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(progress.len() > 2, "{progress:?}");
    }

    #[test]
    fn second_fetch_is_a_cache_hit() {
        let data = fixture();
        let server = mirror(&data, &data);
        let (_dir, home) = home();
        assert!(
            !fetch_from(&home, &server.base(), &mut |_, _| {})
                .unwrap()
                .cache_hit
        );

        // Even with the installed image gone, the cache brings it back.
        std::fs::remove_dir_all(home.image_dir("alpine-3.20.3")).unwrap();
        let mut calls = 0;
        let outcome = fetch_from(&home, &server.base(), &mut |_, _| calls += 1).unwrap();
        assert!(outcome.cache_hit);
        assert_eq!(calls, 0);
        assert_eq!(std::fs::read(outcome.image.disk()).unwrap(), data);
        assert_eq!(server.count(IMAGE_PATH), 1, "{:?}", server.requests());
        assert_eq!(server.count(&format!("{IMAGE_PATH}.sha512")), 2);
        assert_eq!(files_in(&home.cache_dir()).len(), 1);
    }

    /// Fetches `data` once from a mirror, then stops the mirror; returns its
    /// base URL, whose port now refuses connections.
    fn fetch_then_go_offline(home: &Home, data: &[u8]) -> String {
        let server = mirror(data, data);
        fetch_from(home, &server.base(), &mut |_, _| {}).unwrap();
        server.base()
    }

    #[test]
    fn offline_fetch_uses_the_cache() {
        let data = fixture();
        let (_dir, home) = home();
        let base = fetch_then_go_offline(&home, &data);
        std::fs::remove_dir_all(home.image_dir("alpine-3.20.3")).unwrap();
        let outcome = fetch_from(&home, &base, &mut |_, _| {}).unwrap();
        assert!(outcome.cache_hit);
        assert_eq!(std::fs::read(outcome.image.disk()).unwrap(), data);
    }

    #[test]
    fn offline_with_corrupt_cache_is_an_error() {
        let data = fixture();
        let (_dir, home) = home();
        let base = fetch_then_go_offline(&home, &data);
        let cached = home.cache_dir().join(hex(&Sha256::digest(&data)));
        std::fs::write(&cached, b"bit rot").unwrap();
        let err = fetch_from(&home, &base, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing or corrupt"), "{err}");
    }

    #[test]
    fn corrupt_cache_is_downloaded_again() {
        let data = fixture();
        let server = mirror(&data, &data);
        let (_dir, home) = home();
        fetch_from(&home, &server.base(), &mut |_, _| {}).unwrap();
        let cached = home.cache_dir().join(hex(&Sha256::digest(&data)));
        std::fs::remove_file(&cached).unwrap();
        std::fs::write(&cached, b"bit rot").unwrap();

        let outcome = fetch_from(&home, &server.base(), &mut |_, _| {}).unwrap();
        assert!(!outcome.cache_hit);
        assert_eq!(server.count(IMAGE_PATH), 2);
        assert_eq!(std::fs::read(&cached).unwrap(), data);
        assert_eq!(std::fs::read(outcome.image.disk()).unwrap(), data);
    }

    #[test]
    fn another_mirror_with_the_same_content_is_a_cache_hit() {
        let data = fixture();
        let first = mirror(&data, &data);
        let second = mirror(&data, &data);
        let (_dir, home) = home();
        fetch_from(&home, &first.base(), &mut |_, _| {}).unwrap();
        let outcome = fetch_from(&home, &second.base(), &mut |_, _| {}).unwrap();
        assert!(outcome.cache_hit);
        assert_eq!(second.requests(), vec![format!("{IMAGE_PATH}.sha512")]);
        assert_eq!(
            outcome.image.manifest.source,
            format!("http://{}{IMAGE_PATH}", second.addr)
        );
    }

    #[test]
    fn checksum_mismatch_is_an_error_and_caches_nothing() {
        let data = fixture();
        let server = mirror(&data, b"something else");
        let (_dir, home) = home();
        let err = fetch_from(&home, &server.base(), &mut |_, _| {})
            .unwrap_err()
            .to_string();

        let expected = hex(&Sha512::digest(b"something else"));
        let actual = hex(&Sha512::digest(&data));
        assert!(err.starts_with("checksum mismatch for http://"), "{err}");
        assert!(
            err.contains(&format!("expected sha512 {expected}")),
            "{err}"
        );
        assert!(err.contains(&format!("got {actual}")), "{err}");
        assert!(!err.contains('\n'), "{err}");

        assert_eq!(server.count(IMAGE_PATH), 1);
        assert_eq!(files_in(&home.cache_dir()), Vec::<String>::new());
        assert!(!home.cache_index().exists());
        assert_eq!(files_in(&home.images_dir()), Vec::<String>::new());
        assert!(image::load(&home, "alpine-3.20.3").is_err());
    }

    #[test]
    fn missing_version_is_a_clear_404() {
        let server = Server::start(HashMap::new());
        let (_dir, home) = home();
        let err = fetch_from(&home, &server.base(), &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "http://{}{IMAGE_PATH}.sha512 was not found (HTTP 404); check that the version exists on the mirror, or pass --url with another mirror",
                server.addr
            )
        );
        assert_eq!(server.requests(), vec![format!("{IMAGE_PATH}.sha512")]);
        assert_eq!(files_in(&home.cache_dir()), Vec::<String>::new());
        assert_eq!(files_in(&home.images_dir()), Vec::<String>::new());
    }

    #[test]
    fn missing_image_after_checksum_is_a_404() {
        let data = fixture();
        let server = Server::start(HashMap::from([(
            format!("{IMAGE_PATH}.sha512"),
            sha512_file(&data),
        )]));
        let (_dir, home) = home();
        let err = fetch_from(&home, &server.base(), &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "http://{}{IMAGE_PATH} was not found (HTTP 404)",
                server.addr
            )),
            "{err}"
        );
        assert_eq!(files_in(&home.cache_dir()), Vec::<String>::new());
    }

    #[test]
    fn unreachable_mirror_without_cache_says_what_to_do() {
        let (_dir, home) = home();
        let base = dead_base();
        let err = fetch_from(&home, &base, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot reach {base}/v3.20/releases/cloud/")),
            "{err}"
        );
        assert!(
            err.ends_with("; check your network, or pass --url with a reachable mirror"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
