//! The signals that end a command: Ctrl-C (SIGINT), SIGTERM (what `timeout`,
//! systemd and CI runners send) and SIGHUP (a closed terminal) are one and
//! the same request to stop. The first one raises a process-wide flag:
//! commands stop what they started in the guests, finish their files and
//! exit with 128 + the signal's number. A second one exits at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

const SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

struct Installed {
    flag: Arc<AtomicBool>,
    /// The signal that raised the flag, 0 before any.
    signal: Arc<AtomicUsize>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the handlers (once per process) and returns the flag the first
/// stop signal raises.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    if let Some(i) = INSTALLED.get() {
        return Ok(i.flag.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicUsize::new(0));
    for sig in SIGNALS {
        // Registered first, so it runs first: with the flag already up, a
        // second signal exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, flag.clone())?;
        signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    let installed = INSTALLED.get_or_init(|| Installed { flag, signal });
    Ok(installed.flag.clone())
}

/// Whether a stop signal came (false before [`stop_flag`] was called).
pub fn stopping() -> bool {
    INSTALLED
        .get()
        .is_some_and(|i| i.flag.load(Ordering::SeqCst))
}

/// The exit code for a command that stopped on a signal: 128 + its number
/// (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), as shells report it.
pub fn exit_code() -> i32 {
    let sig = INSTALLED
        .get()
        .map_or(0, |i| i.signal.load(Ordering::SeqCst));
    128 + if sig == 0 { SIGINT } else { sig as i32 }
}
