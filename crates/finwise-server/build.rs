//! Builds the web client into the server: every file of the built app becomes a static
//! `(path, bytes, etag)` entry of `web_assets.rs` in `OUT_DIR`, so a copied or installed binary
//! serves the app at `/` from any directory.
//!
//! Where the files come from, first that applies:
//! 1. `FINWISE_WEB_DIST` (a directory with `index.html`), for packagers;
//! 2. `web/dist` when it is at least as new as the web sources (the scripts build it first);
//! 3. a fresh `vite build` into `OUT_DIR` when `npm` is on the PATH (`npm ci` first when
//!    `web/node_modules` is missing), unless `FINWISE_SKIP_WEB_BUILD` is set;
//! 4. nothing: the build warns, and the server logs at start that it has no web app.

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let web = manifest.join("../../web");
    println!("cargo:rerun-if-env-changed=FINWISE_WEB_DIST");
    println!("cargo:rerun-if-env-changed=FINWISE_SKIP_WEB_BUILD");
    for p in ["src", "index.html", "vite.config.ts", "package.json", "dist"] {
        if web.join(p).exists() {
            println!("cargo:rerun-if-changed={}", web.join(p).display());
        }
    }
    let dist = match source_dir(&web, &out) {
        Ok(d) => Some(d),
        Err(why) => {
            println!("cargo:warning=this build carries no web app: {why}");
            None
        }
    };
    let mut files = Vec::new();
    if let Some(d) = &dist {
        collect(d, d, &mut files);
        files.sort();
    }
    let mut code = String::from("/// The built web client: `(url path, bytes, etag)`, sorted by path.\n");
    code.push_str("pub static WEB_ASSETS: &[(&str, &[u8], &str)] = &[\n");
    for (url, path) in &files {
        let bytes = fs::read(path).expect("read web asset");
        writeln!(
            code,
            "    ({url:?}, include_bytes!({:?}), \"\\\"{:016x}\\\"\"),",
            path.display().to_string(),
            fnv1a(&bytes)
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    fs::write(out.join("web_assets.rs"), code).expect("write web_assets.rs");
}

/// The directory whose files are embedded, or why there is none.
fn source_dir(web: &Path, out: &Path) -> Result<PathBuf, String> {
    if let Some(d) = env::var_os("FINWISE_WEB_DIST") {
        let d = PathBuf::from(d);
        return if d.join("index.html").is_file() {
            Ok(d)
        } else {
            Err(format!("FINWISE_WEB_DIST={} has no index.html", d.display()))
        };
    }
    if !web.join("package.json").is_file() {
        return Err("no web/ directory beside the crates".into());
    }
    let dist = web.join("dist");
    let sources =
        ["src", "index.html", "vite.config.ts", "package.json"].iter().map(|p| newest(&web.join(p))).max().flatten();
    let built = fs::metadata(dist.join("index.html")).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(sources)) = (built, sources) {
        if built >= sources {
            return Ok(dist);
        }
    }
    if env::var_os("FINWISE_SKIP_WEB_BUILD").is_some() {
        return Err("web/dist is missing or older than web/src and FINWISE_SKIP_WEB_BUILD is set".into());
    }
    let target = out.join("web-dist");
    if !web.join("node_modules").is_dir() {
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(web))?;
    }
    run(Command::new("npx").args(["vite", "build", "--emptyOutDir", "--outDir"]).arg(&target).current_dir(web))?;
    Ok(target)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{shown} failed ({s}); build the web app with `cd web && npm ci && npm run build`")),
        Err(e) => Err(format!("{shown} could not run ({e}); install Node.js ≥ 20.19 or build web/dist elsewhere")),
    }
}

/// Newest modification time of a file or of any file below a directory.
fn newest(p: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(p).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    fs::read_dir(p).ok()?.filter_map(|e| e.ok()).filter_map(|e| newest(&e.path())).max()
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for e in fs::read_dir(dir).expect("read web dist").flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).expect("below root").to_string_lossy().replace('\\', "/");
            out.push((format!("/{rel}"), p));
        }
    }
}

/// FNV-1a 64: a stable content hash for the ETag (no build dependency needed).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
