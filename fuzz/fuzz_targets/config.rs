//! `Config::parse` on any TOML text: an accepted config has valid
//! thresholds, and every error renders (line/column lookup included).
#![no_main]

use affinity::analyze::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // cli::load_config reads with read_to_string: UTF-8 only.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(c) => assert!(
            c.thresholds.validate().is_ok(),
            "accepted invalid thresholds"
        ),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
