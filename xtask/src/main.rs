//! Developer commands: `cargo xtask <command> [args]`.

mod kernel_test;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let args: Vec<String> = args.collect();
    let result = match cmd.as_str() {
        "kernel-test" => kernel_test::run(args),
        _ => Err(format!(
            "unknown command {cmd:?}\nusage: cargo xtask <command>\ncommands:\n  kernel-test   boot Debian's kernel in QEMU and run the real-kernel scenarios"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
