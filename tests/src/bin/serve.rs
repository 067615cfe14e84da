//! `serve DIR [--port-file FILE] [--timeout SECS]`
//!
//! Serves DIR over HTTP on `127.0.0.1` (an ephemeral port) with
//! [`Server::serve_dir`], for `make demo`. Prints `serving DIR at URL/` on stderr,
//! writes the base URL (`http://127.0.0.1:PORT`, no trailing newline) atomically to
//! the port file if one is given, and exits after the timeout (default 600 seconds)
//! or when killed (SIGTERM/SIGINT terminate it with the default disposition).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use std::{fs, io, thread};

use bundle_tests::server::Server;

const USAGE: &str = "usage: serve DIR [--port-file FILE] [--timeout SECS]";

#[derive(Debug)]
struct Args {
    dir: PathBuf,
    port_file: Option<PathBuf>,
    timeout: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut dir = None;
    let mut port_file = None;
    let mut timeout = Duration::from_secs(600);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--port-file" => port_file = Some(PathBuf::from(value("--port-file")?)),
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--timeout: not a number of seconds: {v}"))?;
                timeout = Duration::from_secs_f64(secs);
            }
            f if f.starts_with('-') && f != "-" => {
                return Err(format!("unknown option {f}\n{USAGE}"));
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}\n{USAGE}")),
        }
    }
    let dir = dir.ok_or_else(|| USAGE.to_string())?;
    Ok(Args {
        dir,
        port_file,
        timeout,
    })
}

/// Writes `contents` to `path` via a temporary file in the same directory and a
/// rename, so that a reader never sees a partial file.
fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("port file path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    if !args.dir.is_dir() {
        eprintln!("serve: {} is not a directory", args.dir.display());
        return ExitCode::from(2);
    }
    let server = Server::serve_dir(&args.dir);
    eprintln!("serving {} at {}", args.dir.display(), server.url("/"));
    if let Some(port_file) = &args.port_file
        && let Err(e) = write_atomically(port_file, &server.base_url())
    {
        eprintln!("serve: cannot write {}: {e}", port_file.display());
        return ExitCode::FAILURE;
    }
    thread::sleep(args.timeout);
    drop(server);
    ExitCode::SUCCESS
}
