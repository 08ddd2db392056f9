fn main() {
    std::process::exit(vmlab::cli::main());
}
