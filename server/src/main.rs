//! `confab`: the relay's command line. Everything but argument parsing lives in the library.

use std::process::ExitCode;

use clap::Parser;
use confab_server::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
