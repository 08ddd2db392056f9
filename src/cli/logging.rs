//! Diagnostics on stderr through `tracing`: warnings by default, more with
//! `-v`/`-vv`, errors only with `-q`. Lines read `warning: …`, like the
//! errors vmlab prints.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(w, "{level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Whether status lines go to stderr: everything but `-q`, which keeps
/// stderr for errors (scripts that capture it see only what went wrong).
pub fn chatty() -> bool {
    tracing::level_filters::LevelFilter::current() >= tracing::level_filters::LevelFilter::WARN
}

/// `eprintln!` for status lines: silent under `-q`.
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::cli::logging::chatty() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use say;

pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => Level::ERROR,
        (false, 0) => Level::WARN,
        (false, 1) => Level::INFO,
        (false, _) => Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .event_format(Plain)
        .try_init();
}
