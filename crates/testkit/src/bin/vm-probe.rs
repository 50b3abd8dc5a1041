//! `vm-probe`: a tiny helper binary the rig's self-tests run inside the guest, proving that a
//! Rust binary of ours runs there (dynamic libc, libgcc_s).
//!
//! Usage: `vm-probe uname` | `vm-probe exit CODE` | `vm-probe tcp HOST:PORT MESSAGE` (sends
//! MESSAGE and a newline, prints the reply line) | `vm-probe write PATH TEXT`.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-probe: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    match args.first().map(String::as_str) {
        Some("uname") => {
            let u = nix::sys::utsname::uname().map_err(|e| format!("uname: {e}"))?;
            println!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("exit") => {
            let code: u8 = args
                .get(1)
                .and_then(|c| c.parse().ok())
                .ok_or("exit needs a code 0..=255")?;
            Ok(ExitCode::from(code))
        }
        Some("tcp") => {
            let (addr, msg) = match (args.get(1), args.get(2)) {
                (Some(a), Some(m)) => (a, m),
                _ => return Err("tcp needs HOST:PORT MESSAGE".into()),
            };
            let mut s =
                std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
            s.write_all(format!("{msg}\n").as_bytes())
                .map_err(|e| format!("send: {e}"))?;
            let mut line = String::new();
            BufReader::new(s)
                .read_line(&mut line)
                .map_err(|e| format!("receive: {e}"))?;
            print!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Some("write") => {
            let (path, text) = match (args.get(1), args.get(2)) {
                (Some(p), Some(t)) => (p, t),
                _ => return Err("write needs PATH TEXT".into()),
            };
            std::fs::write(path, text).map_err(|e| format!("write {path}: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(
            "usage: vm-probe uname | exit CODE | tcp HOST:PORT MESSAGE | write PATH TEXT".into(),
        ),
    }
}
