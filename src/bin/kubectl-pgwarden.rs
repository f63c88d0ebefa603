//! `kubectl pgwarden`: the kubectl plugin (patronictl's counterpart). Everything lives in
//! `pgwarden::cli`.

fn main() {
    std::process::exit(pgwarden::cli::main());
}
