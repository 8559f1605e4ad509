//! With the `embed` feature, writes `$OUT_DIR/bundles.rs`: every file of the built widget and
//! console (`$CONFAB_DIST/widget`, `$CONFAB_DIST/console`; `CONFAB_DIST` defaults to the
//! workspace's `dist`) as `include_bytes!`, by path, sorted. Without it, two empty bundles.

use std::error::Error;
use std::path::{Path, PathBuf};

/// The bundles, each with a file that a complete build has.
const BUNDLES: [(&str, &str, &str); 2] =
    [("WIDGET", "widget", "confab.js"), ("CONSOLE", "console", "index.html")];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-env-changed=CONFAB_DIST");
    println!("cargo:rerun-if-changed=build.rs");
    let embed = std::env::var_os("CARGO_FEATURE_EMBED").is_some();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dist =
        std::env::var_os("CONFAB_DIST").map_or_else(|| manifest.join("../../dist"), PathBuf::from);
    let mut out = String::new();
    for (name, dir, marker) in BUNDLES {
        let root = dist.join(dir);
        let mut files = Vec::new();
        if embed {
            if !root.join(marker).is_file() {
                return Err(format!(
                    "confab-assets: the `embed` feature needs the built {dir} in {} (there is \
                     no {marker}): run scripts/build-widget and scripts/build-console first, or \
                     set CONFAB_DIST",
                    root.display()
                )
                .into());
            }
            println!("cargo:rerun-if-changed={}", root.display());
            walk(&root, &root, &mut files)?;
            files.sort();
        }
        out.push_str(&format!("pub(crate) static {name}: &[(&str, &[u8])] = &[\n"));
        for (relative, path) in &files {
            println!("cargo:rerun-if-changed={}", path.display());
            out.push_str(&format!(
                "    ({relative:?}, include_bytes!({:?})),\n",
                path.display().to_string()
            ));
        }
        out.push_str("];\n");
    }
    let target = PathBuf::from(std::env::var("OUT_DIR")?).join("bundles.rs");
    std::fs::write(target, out)?;
    Ok(())
}

/// Every file under `dir`, as (path relative to `root` with `/`, absolute path).
fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> Result<(), Box<dyn Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            walk(root, &path, files)?;
        } else {
            let relative = path.strip_prefix(root)?;
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let absolute = path.canonicalize()?;
            files.push((parts.join("/"), absolute));
        }
    }
    Ok(())
}
