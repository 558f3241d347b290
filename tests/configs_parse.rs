//! Every experiment config under configs/ parses and passes validation, so a documented command
//! never fails on its own config.

#[test]
fn every_config_in_configs_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            strata::train::Config::load(&path, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 8, "expected the documented configs, found {count}");
}
