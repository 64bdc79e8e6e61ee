//! The binary's edge: clap arguments ([`args`]), the flows from parsed
//! arguments to an exit code ([`run`], [`actions`]), the demo and the docs
//! generator. The only place that opens output files or prompts the user;
//! everything it needs from the system it asks of `host/`, `collect/` and
//! `apply/`, and everything it prints comes from `report/`.

pub mod actions;
pub mod args;
pub mod cancel;
pub mod check;
pub mod demo;
pub mod docs;
pub mod output;
pub mod run;

pub use args::*;

use crate::analyze::config::{Config, ConfigError};

/// Reads and checks a config file (`--config`): opening it is the edge's
/// job, parsing it analyze's.
pub fn load_config(path: &std::path::Path) -> Result<Config, ConfigError> {
    let text = read_config_text(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Config::parse(&text, path)
}

/// Largest config file read: a thresholds table is a few hundred bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of a config file, refused unless it is a regular file of at
/// most [`MAX_CONFIG_BYTES`]: `/dev/zero` would grow until the OOM killer
/// came, and a FIFO would block before tracing (opened non-blocking, it is
/// refused at once).
pub fn read_config_text(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {MAX_CONFIG_BYTES} bytes, which no config is"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_a_fifo_and_a_huge_file_are_refused_at_once() {
        let e = load_config(std::path::Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load_config(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
        let e = load_config(&big).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/config")
            .join(name)
    }

    #[test]
    fn missing_file_says_so() {
        let msg = load_config(&fixture("no_such_file.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no_such_file.toml"), "names the file: {msg}");
        assert!(msg.contains("cannot read"), "{msg}");
    }

    #[test]
    fn a_file_is_read_and_parsed() {
        assert_eq!(
            load_config(&fixture("defaults.toml")).unwrap(),
            Config::default()
        );
    }
}
