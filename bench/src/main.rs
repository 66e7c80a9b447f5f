//! `culex-load`: see `culex-load --help` and the `culex_bench` crate docs.

use std::process::ExitCode;

use culex_bench::options::{self, Command};

fn main() -> ExitCode {
    let options = match options::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", options::HELP);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("culex-load: {message}");
            return ExitCode::from(2);
        }
    };
    let result = culex_bench::run(&options);
    println!("{result}");
    if result.get("error").is_some() || result.get("error_count").and_then(|n| n.as_u64()).unwrap_or(0) > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
