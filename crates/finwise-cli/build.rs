//! Finds the index of `mi_option_purge_delay` in the mimalloc header the linked library was built
//! from (`libmimalloc-sys` hands its include dir to direct dependents). The Rust bindings'
//! option constants lag behind mimalloc 3's enum, so the index is read from the C source of
//! truth instead of being written down by hand; a header without the option fails the build.
use std::{env, fs, path::Path};

fn main() {
    let dir = env::var("DEP_MIMALLOC_INCLUDE_DIR").expect("libmimalloc-sys gives its include dir");
    let header = Path::new(&dir).join("mimalloc.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text = fs::read_to_string(&header).expect("mimalloc.h");
    let start = text.find("typedef enum mi_option_e {").expect("the mi_option_e enum in mimalloc.h");
    let body = &text[start..text[start..].find("} mi_option_t;").map(|e| start + e).expect("end of mi_option_e")];
    // one entry per line before the first alias (`_mi_option_last` ends the counted entries)
    let mut index = 0;
    let mut found = None;
    for line in body.lines().skip(1) {
        let entry = line.split("//").next().unwrap_or("").trim();
        let Some(name) = entry.strip_suffix(',').map(str::trim) else { continue };
        if name == "_mi_option_last" {
            break;
        }
        if name.contains('=') {
            continue;
        }
        if name == "mi_option_purge_delay" {
            found = Some(index);
        }
        index += 1;
    }
    let purge_delay = found.expect("mi_option_purge_delay in mimalloc.h");
    let out = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("mi_options.rs");
    fs::write(
        out,
        format!("/// `mi_option_purge_delay` (from mimalloc.h)\nconst MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = {purge_delay};\n"),
    )
    .expect("write mi_options.rs");
}
