//! The image build's context holds every workspace member: `.dockerignore` lets in only
//! what it names, and a member it leaves out stops `cargo build --locked` in the Dockerfile
//! ("failed to load manifest for workspace member") only once an image is built.

use crate::helpers::repo_root;

#[test]
fn every_workspace_member_is_in_the_image_build_context() {
    let root = repo_root();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|line| line.trim().strip_prefix('!'))
        .collect();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    for member in members.iter().map(|m| m.as_str().unwrap()) {
        let first = member.split('/').next().unwrap();
        let manifest_in = allowed.iter().any(|a| {
            let a = a.trim_end_matches('/');
            a == first || a == member || a == format!("{member}/Cargo.toml")
        });
        assert!(
            manifest_in,
            ".dockerignore leaves workspace member {member} out of the image build: add `!{member}/`"
        );
    }
}
