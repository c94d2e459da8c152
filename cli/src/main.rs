//! `iron`: parses the command line and runs it (everything lives in the library).

fn main() -> std::process::ExitCode {
    iron_cli::main_with(std::env::args_os())
}
