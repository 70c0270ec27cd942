//! The workspace's layout rules that the compiler does not check: inside every crate, the
//! top-level modules form no import cycle (ARCHITECTURE.md, "Architecture invariants").
//!
//! A module's edges are the `crate::<module>` paths its files name outside `#[cfg(test)]` code
//! and comments, with names the crate root re-exports (`crate::Host`) traced to the module
//! that defines them. A cycle is reported with the path that closes it, so the fix is
//! plain: move the shared item down into a module both can use, or invert the call through a
//! trait the lower module defines (as `services::Providers` does for the host's plugin list).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module name -> the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cycles = Vec::new();
    let mut checked = 0;
    for entry in fs::read_dir(&crates).expect("the crates directory") {
        let src = entry.expect("a crate directory").path().join("src");
        if !src.is_dir() {
            continue;
        }
        checked += 1;
        let graph = module_graph(&src);
        for cycle in find_cycles(&graph) {
            cycles.push(format!("{}: {}", src.display(), cycle.join(" -> ")));
        }
    }
    assert!(
        checked >= 5,
        "found only {checked} crates under {}",
        crates.display()
    );
    assert!(
        cycles.is_empty(),
        "module import cycles (each line: a module that reaches itself again):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_check_sees_a_cycle_and_its_path() {
    let graph: Graph = [
        ("a", &["b"][..]),
        ("b", &["c"]),
        ("c", &["a"]),
        ("d", &["a"]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_string(), to.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(find_cycles(&graph), vec![vec!["a", "b", "c", "a"]]);
}

#[test]
fn references_are_read_from_code_not_from_comments_or_tests() {
    let text = "//! see crate::host\nuse crate::kv::PluginStore; // crate::gate\nfn f() { crate::Host::x(); }\n#[cfg(test)]\nmod tests { use crate::audit; }\n";
    let reexports: BTreeMap<String, String> = [("Host".to_string(), "host".to_string())].into();
    let modules: BTreeSet<String> = ["host", "kv", "gate", "audit"].map(String::from).into();
    assert_eq!(
        references(text, &modules, &reexports),
        ["host", "kv"].map(String::from).into()
    );
}

/// The top-level modules of the crate at `src` and the modules each one names.
fn module_graph(src: &Path) -> Graph {
    let mut modules = BTreeSet::new();
    let mut roots = Vec::new();
    for entry in fs::read_dir(src).expect("src") {
        let path = entry.expect("an entry of src").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            roots.push(path);
        } else if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            modules.insert(name);
        }
    }
    let mut reexports = BTreeMap::new();
    for root in &roots {
        read_reexports(
            &fs::read_to_string(root).expect("the crate root"),
            &mut reexports,
        );
    }
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if !modules.contains(&module) {
            continue; // the crate root
        }
        let text = fs::read_to_string(&file).expect("a source file");
        let mut named = references(&text, &modules, &reexports);
        named.remove(&module);
        graph.entry(module).or_default().extend(named);
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// `pub use module::{A, B};` and `pub use module::A;` of the crate root: name -> module.
fn read_reexports(root: &str, out: &mut BTreeMap<String, String>) {
    let code = without_comments(root);
    for statement in code.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|n| !n.is_empty())
        {
            out.entry(name.to_string())
                .or_insert_with(|| module.trim().to_string());
        }
    }
}

/// The modules `text` names through `crate::`, outside comments and `#[cfg(test)]` code (test
/// modules come last in a file here).
fn references(
    text: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let code = without_comments(text);
    let code = code.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    let mut resolve = |name: &str| {
        if modules.contains(name) {
            out.insert(name.to_string());
        } else if let Some(m) = reexports.get(name) {
            out.insert(m.clone());
        }
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, Y}`: the first segment of each item at the group's top level.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        resolve(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            resolve(first_segment(&item));
        } else {
            resolve(first_segment(rest));
        }
    }
    out
}

fn first_segment(path: &str) -> &str {
    let path = path.trim_start();
    let end = path
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(path.len());
    &path[..end]
}

/// `text` without `//` comments (doc comments included: their links are not imports). A `//`
/// inside a string literal cuts the rest of that line, which can only hide a reference.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each cycle once, as the path from its smallest module back to itself.
fn find_cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut cycles: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        // Breadth-first from `start` over modules not smaller than it: the shortest way back.
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut frontier = vec![start.as_str()];
        let mut closed = None;
        'search: while !frontier.is_empty() {
            let mut next = Vec::new();
            for m in frontier {
                for to in graph.get(m).into_iter().flatten() {
                    if to == start {
                        closed = Some(m);
                        break 'search;
                    }
                    if to.as_str() > start.as_str() && !came_from.contains_key(to.as_str()) {
                        came_from.insert(to, m);
                        next.push(to.as_str());
                    }
                }
            }
            frontier = next;
        }
        if let Some(last) = closed {
            let mut path = vec![start.clone()];
            let mut at = last;
            let mut back = Vec::new();
            while at != start {
                back.push(at.to_string());
                at = came_from[at];
            }
            path.extend(back.into_iter().rev());
            path.push(start.clone());
            cycles.push(path);
        }
    }
    cycles
}
