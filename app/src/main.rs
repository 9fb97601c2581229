//! The `app` binary: everything lives in the library (see `cli::main`).

fn main() -> std::process::ExitCode {
    app::cli::main(std::env::args_os())
}
