//! The README's configuration examples are real: every `toml` block loads as a configuration.

use easel::Config;
use easel::config::Overrides;

#[test]
fn every_toml_block_in_the_readme_loads() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks: Vec<&str> = readme.split("```toml\n").skip(1).map(|rest| rest.split("```").next().unwrap()).collect();
    assert!(blocks.len() >= 2, "the README shows its configuration");
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let path = dir.path().join(format!("block{i}.toml"));
        std::fs::write(&path, block).unwrap();
        let config = Config::load(Some(&path), Overrides::default())
            .unwrap_or_else(|e| panic!("README toml block {i} does not load: {e:#}\n{block}"));
        if block.lines().any(|l| l.trim() == "[[channels]]") {
            assert!(!config.channels.is_empty());
        }
        // Its models are a valid catalog, and its channels map only models of it.
        let catalog = easel::catalog::Catalog::new(&config.models)
            .unwrap_or_else(|e| panic!("README toml block {i}'s models do not load: {e:#}\n{block}"));
        for channel in &config.channels {
            for public in channel.models.keys() {
                assert!(catalog.get(public).is_some(), "block {i}: channel {} maps unknown model {public}", channel.id);
            }
        }
    }
}
