//! The README and docs/: every link reaches a file and a heading that exist, and
//! every `make` command they show runs a target the Makefile has.

use rps_fixtures::repo;
use std::path::PathBuf;

/// README.md and every page of docs/, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            paths.push(path);
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The lines of `text` outside fenced code blocks, and those inside.
fn prose_and_code(text: &str) -> (Vec<&str>, Vec<&str>) {
    let (mut prose, mut code, mut fenced) = (Vec::new(), Vec::new(), false);
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            code.push(line);
        } else {
            prose.push(line);
        }
    }
    (prose, code)
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped,
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose_and_code(text)
        .0
        .iter()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links in prose, web addresses left out.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose_and_code(text).0 {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = &after[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                found.push(target.to_string());
            }
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_link_reaches_a_file_and_heading_that_exist() {
    let pages = pages();
    let mut broken = Vec::new();
    for (page, text) in &pages {
        for link in links(text) {
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = match path {
                "" => page.clone(),
                path => page.parent().unwrap().join(path),
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", page.display()));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            let target_text = std::fs::read_to_string(&target).unwrap();
            if !anchors(&target_text).iter().any(|a| a == anchor) {
                broken.push(format!("{}: {link} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// The targets the Makefile defines (`name: ...` at the start of a line).
fn make_targets() -> Vec<String> {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    makefile
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let plain =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
            (plain && !rest.starts_with('=')).then(|| name.to_string())
        })
        .collect()
}

/// The target a shown `make ...` command runs, if it names one (`make ARCH=x` runs
/// the default, `all`); options and the values of `-f`, `-C`, `-I` and `-o` skipped.
fn target_of(command: &str) -> Option<&str> {
    let mut words = command.split_whitespace().skip(1);
    while let Some(word) = words.next() {
        if matches!(word, "-f" | "-C" | "-I" | "-o") {
            words.next();
        } else if !word.starts_with('-') && !word.contains('=') {
            return Some(word);
        }
    }
    None
}

#[test]
fn every_make_command_shown_runs_a_target_that_exists() {
    let targets = make_targets();
    assert!(targets.iter().any(|t| t == "all"), "{targets:?}");
    let mut unknown = Vec::new();
    for (page, text) in pages() {
        let (prose, code) = prose_and_code(&text);
        // Commands in code blocks, and in `code spans` of the prose.
        let spans = prose
            .iter()
            .flat_map(|l| l.split('`').skip(1).step_by(2))
            .collect::<Vec<_>>();
        let commands = code
            .iter()
            .map(|l| l.trim())
            .chain(spans)
            .filter(|c| c.starts_with("make ") || *c == "make");
        for command in commands {
            let command = command.split('#').next().unwrap_or_default();
            if let Some(target) = target_of(command)
                && !targets.iter().any(|t| t == target)
            {
                unknown.push(format!("{}: `{command}`", page.display()));
            }
        }
    }
    assert!(unknown.is_empty(), "no such make target: {unknown:#?}");
}

#[test]
fn the_checks_read_what_they_claim() {
    assert_eq!(slug("Other networks (`ARCH`)"), "other-networks-arch");
    assert_eq!(
        slug("Training from deeper (`UNFREEZE`)"),
        "training-from-deeper-unfreeze"
    );
    assert_eq!(target_of("make bench ARCH=mobilenet_v2"), Some("bench"));
    assert_eq!(target_of("make -s ARCH=resnet50 DATA=/tmp/x"), None);
    assert_eq!(target_of("make -f path/to/Makefile test"), Some("test"));
    assert_eq!(
        links("see [a](docs/a.md#b) and [c](https://x.org)"),
        ["docs/a.md#b"]
    );
}
