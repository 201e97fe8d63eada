//! `kubectl-lite`: prints one `error: …` line on stderr and exits 1 on any failure.

use clap::Parser;
use kubectl_lite::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                };
            }
            let text = e.to_string();
            // clap's message up to the usage block, on one line.
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| {
                    !l.starts_with("Usage:")
                        && !l.starts_with("tip:")
                        && !l.starts_with("For more information")
                })
                .filter(|l| !l.is_empty())
                .collect();
            let msg = msg.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            eprintln!("error: {msg} (see kubectl-lite --help)");
            return ExitCode::FAILURE;
        }
    };
    match kubectl_lite::commands::run_blocking(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The reader of our output went away (`kubectl-lite get pods -w | head -3`).
            let closed = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if closed {
                return ExitCode::SUCCESS;
            }
            // exec: the command's own exit code (kubectl's message, no "error:").
            if let Some(code) = e.downcast_ref::<kubectl_lite::commands::exec::ExitCode>() {
                eprintln!("{code}");
                return ExitCode::from(u8::try_from(code.0).unwrap_or(1));
            }
            eprintln!(
                "error: {}",
                kubectl_lite::util::escape_control(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}
