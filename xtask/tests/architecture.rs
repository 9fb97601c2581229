//! The layering of `xtask/src`, read from its source and from the code map
//! in ARCHITECTURE.md.
//!
//! Every module has a layer, given in ARCHITECTURE.md's code map by its
//! folder (`aws/`) or by its file (`aws/api.rs`), the file winning. A module
//! may name (with `use crate::...`, an inline `crate::...` path or
//! `super::...`) only modules of its own layer or of a lower one:
//!
//! cli → task → adapter → domain → support
//!
//! and nothing outside the cli layer names `flags`. A module the code map
//! does not place, or a row of the code map that places nothing, fails the
//! test too: the map stays true.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use crate::support::project_root;

const LAYERS: [&str; 5] = ["support", "domain", "adapter", "task", "cli"];

/// Module path (`aws::api`) → file (relative to src).
fn module_files() -> BTreeMap<String, PathBuf> {
    let src = project_root().join("xtask/src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(&src).unwrap().to_path_buf();
            (module_path(&relative), relative)
        })
        .collect()
}

fn module_path(relative: &Path) -> String {
    let mut parts: Vec<String> =
        relative.with_extension("").components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The code map's rows: (`aws/` or `aws/api.rs`, layer).
fn code_map() -> Vec<(String, String)> {
    let text = fs::read_to_string(project_root().join("ARCHITECTURE.md")).expect("reading ARCHITECTURE.md");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `path` | layer | what it owns |
            if cells.len() < 4 || !cells[1].starts_with('`') {
                return None;
            }
            let path = cells[1].trim_matches('`').to_owned();
            let layer = cells[2].to_owned();
            LAYERS.contains(&layer.as_str()).then_some((path, layer))
        })
        .collect()
}

/// The layer of a file: its own row, else its nearest folder's.
fn layer_of(file: &Path, map: &[(String, String)]) -> Option<String> {
    let file = file.display().to_string();
    if let Some((_, layer)) = map.iter().find(|(path, _)| *path == file) {
        return Some(layer.clone());
    }
    map.iter()
        .filter(|(path, _)| path.ends_with('/') && file.starts_with(path.as_str()))
        .max_by_key(|(path, _)| path.len())
        .map(|(_, layer)| layer.clone())
}

/// The code of a file without its unit tests and `//` comments.
fn code(file: &Path) -> String {
    let text = fs::read_to_string(file).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every path a module names through `crate::` or `super::`, as full paths
/// from the crate root (`aws::api::ApiError`); groups are expanded.
fn named_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let parent: Vec<String> = {
        let mut parts: Vec<String> = module.split("::").map(str::to_owned).collect();
        parts.pop();
        parts
    };
    for (start, prefix) in [("crate::", Vec::new()), ("super::", parent)] {
        for (index, _) in code.match_indices(start) {
            let before = code[..index].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            expand(&code[index + start.len()..], prefix.clone(), &mut paths);
        }
    }
    paths
}

/// Expands `a::b::{c, d::e}` (the text after `crate::`) into full paths.
fn expand(text: &str, mut prefix: Vec<String>, paths: &mut Vec<Vec<String>>) {
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = 0;
            for (offset, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth > 0 => depth -= 1,
                    ',' | '}' if depth == 0 => {
                        let item = group[item_start..offset].trim();
                        if !item.is_empty() {
                            expand(item, prefix.clone(), paths);
                        }
                        item_start = offset + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if name.is_empty() || name == "self" {
            paths.push(prefix);
            return;
        }
        prefix.push(name.clone());
        rest = &rest[name.len()..];
        match rest.strip_prefix("::") {
            Some(next) => rest = next,
            None => {
                paths.push(prefix);
                return;
            }
        }
    }
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve(path: &[String], modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len()).rev().map(|len| path[..len].join("::")).find(|candidate| modules.contains_key(candidate))
}

struct Graph {
    /// module → (layer, modules it names)
    modules: BTreeMap<String, (String, BTreeSet<String>)>,
}

fn graph() -> Graph {
    let files = module_files();
    let map = code_map();
    let src = project_root().join("xtask/src");
    let mut unplaced = Vec::new();
    let mut modules = BTreeMap::new();
    for (module, file) in &files {
        let Some(layer) = layer_of(file, &map) else {
            unplaced.push(file.display().to_string());
            continue;
        };
        let names = named_paths(module, &code(&src.join(file)))
            .iter()
            .filter_map(|path| resolve(path, &files))
            .filter(|named| named != module)
            .collect();
        modules.insert(module.clone(), (layer, names));
    }
    assert!(unplaced.is_empty(), "ARCHITECTURE.md's code map gives no layer to: {unplaced:?}");
    let stale: Vec<&String> = map
        .iter()
        .map(|(path, _)| path)
        .filter(|path| {
            let placed = if path.ends_with('/') { src.join(path).is_dir() } else { src.join(path).is_file() };
            !placed
        })
        .collect();
    assert!(stale.is_empty(), "ARCHITECTURE.md's code map names what xtask/src does not have: {stale:?}");
    Graph { modules }
}

fn rank(layer: &str) -> usize {
    LAYERS.iter().position(|known| *known == layer).unwrap()
}

#[test]
fn every_module_names_only_its_own_layer_or_lower_ones() {
    let graph = graph();
    let mut upward = Vec::new();
    for (module, (layer, names)) in &graph.modules {
        for named in names {
            let named_layer = &graph.modules[named].0;
            if rank(named_layer) > rank(layer) {
                upward.push(format!("{module} ({layer}) → {named} ({named_layer})"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that climb a layer:\n  {}", upward.join("\n  "));
}

#[test]
fn nothing_below_the_command_line_names_the_flags() {
    let graph = graph();
    let offenders: Vec<&String> = graph
        .modules
        .iter()
        .filter(|(_, (layer, names))| layer != "cli" && names.contains("flags"))
        .map(|(module, _)| module)
        .collect();
    assert!(offenders.is_empty(), "these modules import the CLI (flags): {offenders:?}");
}

#[test]
fn the_reader_sees_groups_paths_and_super() {
    let joined = |paths: Vec<Vec<String>>| paths.into_iter().map(|path| path.join("::")).collect::<Vec<_>>();
    let code = "use crate::{a::b, c, d::{self, e, f::G}};\nfn x() { crate::g::h(); }\nuse super::{k, l::M};";
    assert_eq!(joined(named_paths("p::q", code)), ["a::b", "c", "d", "d::e", "d::f::G", "g::h", "p::k", "p::l::M"]);
    let modules: BTreeMap<String, PathBuf> =
        ["a", "d", "d::f"].into_iter().map(|module| (module.to_owned(), PathBuf::new())).collect();
    let path: Vec<String> = ["d", "f", "G"].into_iter().map(str::to_owned).collect();
    assert_eq!(resolve(&path, &modules).as_deref(), Some("d::f"));
}

#[test]
fn a_climbing_import_is_caught() {
    let map = vec![("support/".to_owned(), "support".to_owned()), ("aws/deploy.rs".to_owned(), "task".to_owned())];
    assert_eq!(layer_of(Path::new("support/ui.rs"), &map).as_deref(), Some("support"));
    assert_eq!(layer_of(Path::new("aws/deploy.rs"), &map).as_deref(), Some("task"));
    assert_eq!(layer_of(Path::new("aws/push.rs"), &map), None);
    assert!(rank("task") > rank("support"), "a support module naming a task climbs");
}

/// deploy.toml is read once per run: only `config/` reads the file, only
/// the command line (`flags.rs`) holds the once-per-run reader, and only
/// the command line reads which environment `--env` names; tasks receive
/// the resolved target.
#[test]
fn only_the_command_line_reads_deploy_toml_and_the_environment_name() {
    let src = project_root().join("xtask/src");
    let mut offenders = Vec::new();
    for (module, file) in module_files() {
        let code = code(&src.join(&file));
        let checks = [
            ("Config::load(", module.starts_with("config")),
            ("ConfigOnce::new(", module == "flags" || module.starts_with("config")),
            ("global.environment", module == "flags"),
        ];
        for (needle, allowed) in checks {
            if !allowed && code.contains(needle) {
                offenders.push(format!("{} names {needle}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// Lines of code of a file: not blank, not a comment, not in its trailing
/// `#[cfg(test)] mod tests`.
fn lines_of_code(text: &str) -> usize {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    let mut in_block_comment = false;
    code.lines()
        .map(str::trim)
        .filter(|line| {
            if in_block_comment {
                in_block_comment = !line.contains("*/");
                return false;
            }
            if line.starts_with("/*") {
                in_block_comment = !line.contains("*/");
                return false;
            }
            !line.is_empty() && !line.starts_with("//")
        })
        .count()
}

/// One module per concern: no file of xtask/src over 500 lines of code.
#[test]
fn no_module_is_over_500_lines_of_code() {
    let src = project_root().join("xtask/src");
    let too_long: Vec<String> = module_files()
        .into_values()
        .filter_map(|file| {
            let count = lines_of_code(&fs::read_to_string(src.join(&file)).unwrap());
            (count > 500).then(|| format!("{}: {count}", file.display()))
        })
        .collect();
    assert!(too_long.is_empty(), "split these by concern: {too_long:?}");
    assert_eq!(
        lines_of_code("fn a() {}\n\n// note\n/* x\n y */\nfn b() {}\n#[cfg(test)]\nmod tests {\n fn c() {}\n}\n"),
        2
    );
}
