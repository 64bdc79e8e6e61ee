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
pub mod run;

pub use args::*;

use crate::analyze::config::{Config, ConfigError};

/// Reads and checks a config file (`--config`): opening it is the edge's
/// job, parsing it analyze's.
pub fn load_config(path: &std::path::Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Config::parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
