//! The configuration loader: `${VAR}` interpolation, TOML and validation
//! from arbitrary text, with variables from an env file cut from the input
//! (after a NUL byte). Nothing may panic; a configuration that loads must
//! validate without panicking, and interpolation without variables must
//! leave text without `$` alone.
//! Run: `cd fuzz && cargo +nightly fuzz run config -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage::config::interpolate::{parse_env_file, Vars};
use vantage::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (config, env) = text.split_once('\0').unwrap_or((text, ""));
    let vars = Vars::from_map(parse_env_file(env));
    if let Ok(c) = Config::from_text(config, "fuzz.toml", &vars) {
        let _ = c.validate();
        let _ = c.summary();
    }
});
