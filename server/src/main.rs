//! `pbs-cloud-server`: parses the command line and hands over to `cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = pbs_cloud_server::cli::Cli::parse();
    pbs_cloud_server::cli::init_logging();
    match pbs_cloud_server::cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
