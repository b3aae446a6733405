//! The configuration file parser and validator must never panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbs_cloud_server::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(std::path::Path::new("fuzz.toml"), text) {
        let _ = config.listen_addr();
        let _ = config.default_tenant();
        let _ = config.limits.edge_limits(Default::default());
        let _ = config.limits.hash_pool();
    }
});
