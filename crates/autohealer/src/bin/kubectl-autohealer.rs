//! `kubectl-autohealer`: the kubectl plugin. On PATH, kubectl runs it as
//! `kubectl autohealer ...`; the logic is in `autohealer::kubectl`.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Exit 1 for any error, a bad command line included, as the plugin's users script
    // against 0 or 1; help and version are not errors.
    let cli = match autohealer::kubectl::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    autohealer::install_crypto();
    let mut out = std::io::stdout().lock();
    let result = autohealer::kubectl::run(cli, &mut out).await;
    drop(out);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("kubectl-autohealer: {}", msg.split_whitespace().collect::<Vec<_>>().join(" "));
            ExitCode::FAILURE
        }
    }
}
