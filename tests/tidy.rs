//! The architecture's rules, checked: every crate's normal `[dependencies]` against
//! the table in docs/ARCHITECTURE.md, and rps-onnx's graph types used only where
//! graphs are built.

use rps_fixtures::repo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a crate may use, by crate: `None` for anything.
type Rules = BTreeMap<String, Option<Vec<String>>>;

/// The table under "Which crate may depend on which" in docs/ARCHITECTURE.md.
fn rules() -> Rules {
    let text = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).unwrap();
    let table = text
        .split("Which crate may depend on which")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has the dependency table");
    let mut rules = Rules::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        let Some(row) = line.strip_prefix('|') else {
            break;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells[0] == "crate" || cells[0].starts_with("---") {
            continue;
        }
        let allowed = cells[1].split(" (").next().unwrap();
        let allowed = match allowed {
            "anything" => None,
            "no rps crate" => Some(Vec::new()),
            list => Some(list.split(',').map(|c| c.trim().to_string()).collect()),
        };
        for name in cells[0].split(',') {
            rules.insert(name.trim().to_string(), allowed.clone());
        }
    }
    rules
}

/// Every workspace crate's manifest: `crates/*` and `tests/`.
fn manifests() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("Cargo.toml"))
        .filter(|p| p.exists())
        .collect();
    paths.push(repo().join("tests/Cargo.toml"));
    paths.sort();
    paths
}

/// The package name and the rps crates of `[dependencies]` of a manifest.
fn rps_dependencies(manifest: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut name = None;
    let mut deps = Vec::new();
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let key = line.split(['=', '.', ' ']).next().unwrap_or("");
        match section {
            "[package]" if key == "name" => {
                name = line.split('"').nth(1).map(String::from);
            }
            "[dependencies]" if key.starts_with("rps-") => deps.push(key.to_string()),
            _ => {}
        }
    }
    (name.expect("a package name"), deps)
}

#[test]
fn every_crate_keeps_to_the_dependency_table() {
    let rules = rules();
    let mut broken = Vec::new();
    for manifest in manifests() {
        let (name, deps) = rps_dependencies(&manifest);
        let Some(allowed) = rules.get(&name) else {
            broken.push(format!("{name}: not in docs/ARCHITECTURE.md's table"));
            continue;
        };
        for dep in deps {
            if allowed.as_ref().is_some_and(|list| !list.contains(&dep)) {
                broken.push(format!(
                    "{name} depends on {dep}, which the table does not allow"
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_table_is_read_and_names_real_crates() {
    let rules = rules();
    assert_eq!(rules["rps-weights"], Some(vec!["rps-core".to_string()]));
    assert_eq!(rules["rps-bench"], None);
    let crates: Vec<String> = manifests().iter().map(|m| rps_dependencies(m).0).collect();
    for name in rules.keys() {
        assert!(
            crates.contains(name),
            "the table names {name}, which is no crate"
        );
    }
}

/// Whether Rust source `text` reaches rps-onnx's `proto` module by a path
/// (`rps_onnx::proto::X`) or a use tree (`rps_onnx::{proto, ...}`, nested groups,
/// a glob), whatever the spacing; comments and literals are not code.
fn names_onnx_proto(text: &str) -> bool {
    let tokens = tokens(text);
    tokens.windows(3).enumerate().any(|(at, window)| {
        if window[0] != "rps_onnx" || window[1] != "::" {
            return false;
        }
        match window[2].as_str() {
            "proto" | "*" => true,
            "{" => {
                let mut depth = 0;
                for token in &tokens[at + 2..] {
                    match token.as_str() {
                        "{" => depth += 1,
                        "}" if depth == 1 => return false,
                        "}" => depth -= 1,
                        "proto" | "*" => return true,
                        _ => {}
                    }
                }
                false
            }
            _ => false,
        }
    })
}

/// Identifiers, `::` and single punctuation characters of Rust source `code`,
/// without its comments, string literals and char literals.
fn tokens(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(&more) = chars.peek().filter(|n| n.is_alphanumeric() || **n == '_') {
                word.push(more);
                chars.next();
            }
            tokens.push(word);
        } else if c == '/' && next == Some('/') {
            chars.by_ref().take_while(|&x| x != '\n').for_each(drop);
        } else if c == '/' && next == Some('*') {
            chars.next();
            let mut last = ' ';
            for x in chars.by_ref() {
                if last == '*' && x == '/' {
                    break;
                }
                last = x;
            }
        } else if c == '"' {
            while let Some(inside) = chars.next() {
                match inside {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
        } else if c == '\'' {
            // A char literal ('"', '\\') goes; a lifetime's quote alone goes.
            let rest: Vec<char> = chars.clone().take(2).collect();
            if rest.first() == Some(&'\\') {
                chars.next();
                chars.by_ref().take_while(|&x| x != '\'').for_each(drop);
            } else if rest.get(1) == Some(&'\'') {
                chars.nth(1);
            }
        } else if c == ':' && next == Some(':') {
            chars.next();
            tokens.push("::".into());
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    tokens
}

#[test]
fn the_proto_rule_reads_use_trees() {
    for naming in [
        "use rps_onnx::proto::ModelProto;",
        "use rps_onnx::{float_tensor, proto};",
        "use rps_onnx :: { proto :: { NodeProto } };",
        "use rps_onnx::{a::{b, proto::X}};",
        "use rps_onnx::*;",
        "let m = rps_onnx::proto::ModelProto::default();",
        "let url = \"https://x\"; let q = '\"';\nuse rps_onnx::proto;",
        "let q = '\\''; let r = '\\\\'; fn f<'a>() {}\nuse rps_onnx::proto;",
    ] {
        assert!(names_onnx_proto(naming), "{naming}");
    }
    for not_naming in [
        "use rps_onnx::float_tensor;",
        "use rps_onnx::{float_tensor, read};",
        "// rps_onnx::proto in a comment",
        "/* rps_onnx::{proto} */",
        "let s = \"rps_onnx::proto\";",
        "use other::proto;",
    ] {
        assert!(!names_onnx_proto(not_naming), "{not_naming}");
    }
}

/// The `.rs` files under `roots`, but those under a path `skipped` says so of.
fn rust_files(roots: Vec<PathBuf>, skipped: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let (mut files, mut folders) = (Vec::new(), roots);
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if skipped(&path) {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn only_rps_export_builds_graphs_from_rps_onnx_types() {
    let crates = repo().join("crates");
    let skipped = |path: &Path| {
        let inside = |c: &str| path.starts_with(crates.join(c));
        inside("rps-export") || inside("rps-onnx") || path.ends_with("target")
    };
    let offenders: Vec<String> = rust_files(vec![crates.clone(), repo().join("tests")], skipped)
        .into_iter()
        .filter(|path| names_onnx_proto(&std::fs::read_to_string(path).unwrap()))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "rps-onnx's graph types used in {offenders:?}"
    );
}

/// A network is the model's to describe: the stage crates and rps-core (outside
/// their tests) name no network of `rps_model::network::Net`, so adding one
/// touches the model, its references and the weights table only.
#[test]
fn only_the_model_names_a_network() {
    let stages = [
        "rps-core",
        "rps-fetch",
        "rps-preprocess",
        "rps-export",
        "rps-extract",
        "rps-train",
        "rps-evaluate",
    ];
    let roots = stages.map(|s| repo().join("crates").join(s).join("src"));
    let names_one = |path: &PathBuf| {
        let text = std::fs::read_to_string(path).unwrap();
        // Test modules close each file (`#[cfg(test)]` to the end).
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        tokens(code).windows(3).any(|w| {
            let variant = w[2].starts_with(|c: char| c.is_ascii_uppercase());
            w[0] == "Net" && w[1] == "::" && variant && w[2] != "ALL"
        })
    };
    let offenders: Vec<String> = rust_files(roots.to_vec(), |_| false)
        .into_iter()
        .filter(names_one)
        .map(|path| path.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "a network named in {offenders:?}");
}
