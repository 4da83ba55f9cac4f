fn main() -> std::process::ExitCode {
    kapell::cli::main()
}
