//! The layout rules of docs/DESIGN.md ("Parts and arrows"), checked on the source tree:
//!
//! 1. nothing under `actors/`, `persistence/`, `dispatch/` or `geo/` imports `crate::http` or
//!    `crate::engine`;
//! 2. `dispatch/` and `geo/` import no actix, sqlx, lapin or redis, and not `crate::config`;
//! 3. no import cycle spans two parts.
//!
//! A part is a folder under `src/` or a top-level file (`engine`, `config`, `clock`, …). Imports
//! are read from the code (comments skipped): `crate::part`, `crate::{part, …}`, names the crate
//! root re-exports (`crate::Engine` is `engine`), and `super::` paths that climb out of a part.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Parts that must not know HTTP or the composition root.
const BELOW_HTTP: &[&str] = &["actors", "persistence", "dispatch", "geo"];
/// Parts that must stay pure.
const PURE: &[&str] = &["dispatch", "geo"];
/// Crates that pure parts must not use.
const IMPURE_CRATES: &[&str] = &[
    "actix",
    "actix_web",
    "actix_rt",
    "actix_ws",
    "sqlx",
    "lapin",
    "redis",
];

/// One source file: its module path below the crate root (`["http", "ws", "inbound"]`) and text.
struct Source {
    module: Vec<String>,
    text: String,
}

impl Source {
    fn part(&self) -> &str {
        self.module.first().map_or("lib", String::as_str)
    }
}

fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn read_tree(root: &Path) -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files
        .into_iter()
        .filter(|f| f != &root.join("main.rs") && f != &root.join("lib.rs"))
        .map(|f| Source {
            module: module_path(f.strip_prefix(root).expect("below src/")),
            text: std::fs::read_to_string(&f).expect("a readable source file"),
        })
        .collect()
}

/// The code of a file without comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Names the crate root re-exports (`pub use engine::{Engine, …}` in lib.rs), by the part they
/// come from, so `crate::Engine` counts as an import of `engine`.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs");
    let mut names = BTreeMap::new();
    for line in lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use "))
    {
        let (part, rest) = line.split_once("::").unwrap_or((line, ""));
        let items = rest.trim_end_matches(';');
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit("::").next().unwrap_or(item).trim();
            if !name.is_empty() {
                names.insert(name.to_owned(), part.to_owned());
            }
        }
    }
    names
}

/// The parts (crate-level modules) a file refers to.
fn referenced_parts(source: &Source) -> BTreeSet<String> {
    let code = code(&source.text);
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident_at(&group[j..]).to_owned());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(rest).to_owned());
        }
    }
    // `super::super::x` from deep inside a part may reach the crate root and another part.
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with("super::") {
            continue;
        }
        let mut rest = &code[i..];
        // `super` in the file of module `a::b` is `a`; one more `super` is the crate root.
        let mut module = source.module.clone();
        let mut climbed_out = false;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            module.pop();
            if module.is_empty() {
                climbed_out = true;
                break;
            }
        }
        if climbed_out {
            out.insert(ident_at(rest).to_owned());
        }
    }
    let reexports = root_reexports();
    out.into_iter()
        .filter(|p| !p.is_empty() && p != "self" && p != "super")
        .map(|p| reexports.get(&p).cloned().unwrap_or(p))
        .collect()
}

/// External crates a file names in `use` lines or paths.
fn uses_crate(source: &Source, krate: &str) -> bool {
    let code = code(&source.text);
    let needle = format!("{krate}::");
    code.match_indices(&needle).any(|(i, _)| {
        let head = &code[..i];
        // `::actix::…` names the crate too; `foo::actix::…` is some module's item.
        let head = match head.strip_suffix("::") {
            Some(h) if !h.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') => h,
            _ => head,
        };
        !head
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    })
}

/// Which parts each part imports.
fn part_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let part = source.part().to_owned();
        let refs = referenced_parts(source);
        let edges = graph.entry(part.clone()).or_default();
        edges.extend(refs.into_iter().filter(|r| *r != part));
    }
    graph
}

/// Every broken rule, as sentences.
fn violations(sources: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    let graph = part_graph(sources);
    for source in sources {
        let part = source.part().to_owned();
        let file = source.module.join("::");
        let refs = referenced_parts(source);
        if BELOW_HTTP.contains(&part.as_str()) {
            for forbidden in ["http", "engine"] {
                if refs.contains(forbidden) {
                    found.push(format!("{file} ({part}) imports crate::{forbidden}"));
                }
            }
        }
        if PURE.contains(&part.as_str()) {
            if refs.contains("config") {
                found.push(format!("{file} ({part}) imports crate::config"));
            }
            for krate in IMPURE_CRATES {
                if uses_crate(source, krate) {
                    found.push(format!("{file} ({part}) uses the crate {krate}"));
                }
            }
        }
    }
    // A cycle between parts: some part reaches itself through another.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = graph[start]
            .iter()
            .map(|n| (n.clone(), vec![start.clone(), n.clone()]))
            .collect();
        while let Some((node, path)) = stack.pop() {
            if &node == start {
                found.push(format!("import cycle between parts: {}", path.join(" → ")));
                break;
            }
            if !seen.insert(node.clone()) {
                continue;
            }
            for next in graph.get(&node).into_iter().flatten() {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_source_tree_keeps_the_layout_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_tree(&root);
    assert!(sources.len() > 40, "found only {} files", sources.len());
    let graph = part_graph(&sources);
    for (from, to) in [
        ("http", "actors"),
        ("actors", "persistence"),
        ("actors", "dispatch"),
        ("dispatch", "geo"),
        ("engine", "http"),
    ] {
        assert!(
            graph.get(from).is_some_and(|t| t.contains(to)),
            "the check does not see the import {from} → {to}: {graph:?}"
        );
    }
    let broken = violations(&sources);
    assert!(
        broken.is_empty(),
        "layout rules broken:\n{}",
        broken.join("\n")
    );
}

fn file(module: &str, text: &str) -> Source {
    Source {
        module: module.split("::").map(str::to_owned).collect(),
        text: text.to_owned(),
    }
}

#[test]
fn the_check_catches_each_kind_of_violation() {
    let cases: &[(&str, Vec<Source>, &str)] = &[
        (
            "an actor importing the HTTP layer",
            vec![file("actors::trip", "use crate::http::error::ApiError;")],
            "actors::trip (actors) imports crate::http",
        ),
        (
            "a grouped import of the composition root",
            vec![file(
                "persistence::store",
                "use crate::{dispatch::Trip, engine::Engine};",
            )],
            "persistence::store (persistence) imports crate::engine",
        ),
        (
            "super:: climbing out of a part",
            vec![file("actors::core", "use super::super::http::AppState;")],
            "actors::core (actors) imports crate::http",
        ),
        (
            "the pure domain reading settings",
            vec![file("dispatch::matching", "use crate::config::Settings;")],
            "dispatch::matching (dispatch) imports crate::config",
        ),
        (
            "the pure domain using actix",
            vec![file("geo::index", "use actix::prelude::*;")],
            "geo::index (geo) uses the crate actix",
        ),
        (
            "an absolute path to an impure crate",
            vec![file("dispatch::lifecycle", "let x = ::sqlx::query(\"\");")],
            "dispatch::lifecycle (dispatch) uses the crate sqlx",
        ),
        (
            "the composition root through its re-export at the crate root",
            vec![file("persistence::store", "use crate::Engine;")],
            "persistence::store (persistence) imports crate::engine",
        ),
        (
            "super:: out of a module folder's own file",
            vec![
                file(
                    "http::ws::inbound",
                    "use super::super::super::engine::Engine;",
                ),
                file("engine", "use crate::http::AppState;"),
            ],
            "import cycle between parts: engine → http → engine",
        ),
        (
            "a cycle between two parts",
            vec![
                file("persistence::store", "use crate::metrics::X;"),
                file("metrics", "use crate::persistence::Store;"),
            ],
            "import cycle between parts: metrics → persistence → metrics",
        ),
    ];
    for (what, sources, expected) in cases {
        let broken = violations(sources);
        assert!(
            broken.iter().any(|b| b == expected),
            "{what}: expected {expected:?}, found {broken:?}"
        );
    }
    let fine = vec![
        file(
            "actors::trip",
            "// a comment naming crate::http is not an import\nuse crate::dispatch::Trip;",
        ),
        file("http::trip_routes", "use crate::actors::Core;"),
        file("dispatch::lifecycle", "use crate::geo::LatLng;"),
        file("actors::core", "use super::trip_store::TripStore;"),
    ];
    assert_eq!(
        violations(&fine),
        Vec::<String>::new(),
        "allowed arrows pass"
    );
}
