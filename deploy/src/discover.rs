//! Finds the compose files a repository ships: the root `docker-compose.yml` (and
//! `compose.yaml` style names) and every compose file under `deploy/`.

use std::path::{Path, PathBuf};

/// True for the names compose itself looks for, and for `*.compose.yml`-style variants.
pub fn is_compose_file_name(name: &str) -> bool {
    let Some(stem) = name
        .strip_suffix(".yml")
        .or_else(|| name.strip_suffix(".yaml"))
    else {
        return false;
    };
    stem == "compose"
        || stem == "docker-compose"
        || stem.starts_with("docker-compose.")
        || stem.starts_with("compose.")
        || stem.ends_with(".compose")
        || stem.ends_with("-compose")
}

/// Compose files at the root of `repo` and anywhere under `repo/deploy`, sorted.
pub fn compose_files(repo: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo)? {
        let entry = entry?;
        if entry.file_type()?.is_file()
            && is_compose_file_name(&entry.file_name().to_string_lossy())
        {
            found.push(entry.path());
        }
    }
    let deploy = repo.join("deploy");
    if deploy.is_dir() {
        walk(&deploy, &mut found)?;
    }
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() && name != "target" && !name.starts_with('.') {
            walk(&entry.path(), found)?;
        } else if kind.is_file() && is_compose_file_name(&name) {
            found.push(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_compose_file_name;

    #[test]
    fn recognises_compose_names() {
        for name in [
            "docker-compose.yml",
            "compose.yaml",
            "docker-compose.droplet.yml",
            "app.compose.yml",
            "droplet-compose.yaml",
        ] {
            assert!(is_compose_file_name(name), "{name}");
        }
        for name in [
            "Cargo.toml",
            "config.yml",
            "composer.yml",
            "docker-compose.yml.bak",
        ] {
            assert!(!is_compose_file_name(name), "{name}");
        }
    }
}
