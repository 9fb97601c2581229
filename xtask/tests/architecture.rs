//! The layering of `xtask/src`, read from its source: which module names
//! which (`use crate::...` and inline `crate::...` paths).
//!
//! Two rules hold today and must keep holding:
//! - nothing below the command line names `flags` (the CLI): tasks and
//!   everything under them take plain values, so the command line can
//!   change without touching them;
//! - the support layer (`ctx`, `util`, `ui`, `ndjson`, `cleanup`) names
//!   only itself, so any module can use it without an import cycle.

use std::{collections::BTreeSet, fs, path::Path};

use crate::support::project_root;

const CLI: [&str; 3] = ["main", "flags", "completions"];
const SUPPORT: [&str; 5] = ["ctx", "util", "ui", "ndjson", "cleanup"];

/// (module path relative to src, the top-level modules it names).
fn modules() -> Vec<(String, BTreeSet<String>)> {
    let src = project_root().join("xtask/src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let text = fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let relative = file.strip_prefix(&src).unwrap().with_extension("").display().to_string();
            (relative, named_modules(code))
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// Every `crate::name` and every name in a `use crate::{a, b::c}` group.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let identifier =
        |text: &str| -> String { text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    for (index, _) in code.match_indices("crate::") {
        let rest = &code[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: at brace depth 0, after `{` or `,`.
            let mut depth = 0;
            let mut start = true;
            for (offset, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        names.insert(identifier(&group[offset..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(identifier(rest));
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

#[test]
fn nothing_below_the_command_line_names_the_flags() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|(module, names)| !CLI.contains(&module.as_str()) && names.contains("flags"))
        .map(|(module, _)| module)
        .collect();
    assert!(offenders.is_empty(), "these modules import the CLI (flags): {offenders:?}");
}

#[test]
fn the_support_layer_names_only_itself() {
    let modules = modules();
    for support in SUPPORT {
        let (_, names) =
            modules.iter().find(|(module, _)| module == support).unwrap_or_else(|| panic!("no {support}.rs"));
        let upward: Vec<&String> = names.iter().filter(|name| !SUPPORT.contains(&name.as_str())).collect();
        assert!(upward.is_empty(), "{support}.rs (support layer) imports higher layers: {upward:?}");
    }
}

#[test]
fn the_reader_sees_groups_and_paths() {
    let names = named_modules("use crate::{a::b, c, d::{e, f}};\nfn x() { crate::g::h(); }");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a", "c", "d", "g"]);
}
