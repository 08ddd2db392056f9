fn main() {
    // Die quietly on a closed pipe (`vmlab status | head`) like other Unix tools.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(vmlab::cli::main());
}
