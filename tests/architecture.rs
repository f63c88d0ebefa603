//! The layering of src/, checked on the source text: the three wings `operator`, `agent` and
//! `cli` import the contract (`crate::api`) and the shared utilities (`crate::common`) but never
//! each other; `api` is pure and imports no wing and not `common`; `common` imports no wing.
//! docs/architecture.md tells why. Paths are found after comments and literals are removed:
//! `crate::x`, `crate::{x, ..}`, `pgwarden::x` and `super::` chains that climb out of a wing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// For each top-level module under src/, the top-level modules it must not reference.
const RULES: &[(&str, &[&str])] = &[
    ("operator", &["agent", "cli"]),
    ("agent", &["operator", "cli"]),
    ("cli", &["agent", "operator"]),
    ("api", &["agent", "operator", "cli", "common"]),
    ("common", &["agent", "operator", "cli"]),
];

/// Violations that exist today and are being removed: (file under src/, the module it reaches,
/// as `crate::<top>`). The test prints them, fails on any violation not listed here, and fails on
/// any entry that no longer occurs, so this list only shrinks. Keep each entry commented with
/// what it imports and who removes it. (Empty: src/ had no violation when this test was written.)
const ALLOWED: &[(&str, &str)] = &[];

/// The source with comments, string literals and char literals blanked out (newlines kept, so
/// line numbers stay right).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !b[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string r"..." or r#"..."#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < b.len() {
                if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            if i < b.len() {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the former is blanked.
            let end = if next == Some('\\') {
                (i + 2..b.len()).find(|&k| b[k] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for &ch in &b[i..=e] {
                        blank(&mut out, ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The module path of a file under src/ (`agent/postgres/mod.rs` → `[agent, postgres]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first identifier at `s` (after blanks), or the first identifier of each item of a
/// `{..}` group there (which may span lines).
fn names_at(s: &str) -> Vec<String> {
    let lead = |item: &str| -> String {
        item.trim_start()
            .chars()
            .take_while(|c| is_ident(*c))
            .collect()
    };
    let s = s.trim_start();
    let Some(group) = s.strip_prefix('{') else {
        return [lead(s)].into_iter().filter(|n| !n.is_empty()).collect();
    };
    let mut items = vec![];
    let mut item = String::new();
    let mut depth = 0;
    for c in group.chars() {
        match c {
            '}' if depth == 0 => break,
            ',' if depth == 0 => items.push(std::mem::take(&mut item)),
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && c != ',' && c != '}' {
            item.push(c);
        }
    }
    items.push(item);
    items
        .iter()
        .map(|i| lead(i))
        .filter(|n| !n.is_empty())
        .collect()
}

/// For each line, how many inline `mod x {` blocks it is in (rustfmt indents their bodies and
/// puts the closing brace at the `mod` line's indentation).
fn inline_depths(code: &str) -> Vec<usize> {
    let mut open: Vec<usize> = vec![];
    let mut out = vec![];
    for line in code.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        while open
            .last()
            .is_some_and(|&i| indent <= i && trimmed.starts_with('}'))
        {
            open.pop();
        }
        out.push(open.len());
        let declares_mod = trimmed.starts_with("mod ")
            || trimmed.starts_with("pub mod ")
            || (trimmed.starts_with("pub(") && trimmed.contains(") mod "));
        if declares_mod && trimmed.ends_with('{') {
            open.push(indent);
        }
    }
    out
}

/// The top-level modules a file's code references: `(line, top)`. `module` is the file's module
/// path, for resolving `super` chains; a chain that stays below the top-level module stays in
/// its wing and is not a reference.
fn references(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let depths = inline_depths(code);
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(code.match_indices('\n').map(|(k, _)| k + 1))
        .collect();
    let line_of = |at: usize| line_starts.partition_point(|&s| s <= at);
    let mut found = vec![];
    let mut from = 0;
    while let Some(pos) = code[from..].find("::") {
        let at = from + pos;
        from = at + 2;
        // The segment before this `::`, and whether it starts a path.
        let seg_start = code[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !is_ident(*c))
            .map_or(0, |(k, c)| k + c.len_utf8());
        let seg = &code[seg_start..at];
        if code[..seg_start].ends_with("::") {
            continue;
        }
        let line = line_of(at);
        if seg == "crate" || seg == "pgwarden" {
            for name in names_at(&code[at + 2..]) {
                found.push((line, name));
            }
        } else if seg == "super" {
            let mut ups = 1;
            let mut after = at + 2;
            while code[after..].starts_with("super::") {
                ups += 1;
                after += "super::".len();
            }
            from = after;
            if ups >= module.len() + depths[line - 1] {
                for name in names_at(&code[after..]) {
                    found.push((line, name));
                }
            }
        }
    }
    found
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every violation under src/: (file relative to src/, line, `crate::<top>`).
fn violations(src: &Path) -> Vec<(String, usize, String)> {
    let mut out = vec![];
    for path in rust_files(src) {
        let rel = path.strip_prefix(src).expect("under src/");
        let module = module_path(rel);
        let Some(wing) = module.first() else { continue };
        let Some((_, forbidden)) = RULES.iter().find(|(w, _)| w == wing) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read a source file");
        for (line, top) in references(&code_only(&text), &module) {
            if forbidden.contains(&top.as_str()) {
                out.push((
                    rel.to_string_lossy().into_owned(),
                    line,
                    format!("crate::{top}"),
                ));
            }
        }
    }
    out
}

#[test]
fn the_wings_import_only_the_contract_and_common() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let allowed: BTreeSet<(&str, &str)> = ALLOWED.iter().copied().collect();
    if !ALLOWED.is_empty() {
        eprintln!("allowed for now (being removed):");
        for (file, path) in ALLOWED {
            eprintln!("  src/{file} uses {path}");
        }
    }
    let new: Vec<String> = found
        .iter()
        .filter(|(file, _, path)| !allowed.contains(&(file.as_str(), path.as_str())))
        .map(|(file, line, path)| format!("src/{file}:{line} uses {path}"))
        .collect();
    let present: BTreeSet<(&str, &str)> = found
        .iter()
        .map(|(file, _, path)| (file.as_str(), path.as_str()))
        .collect();
    let gone: Vec<String> = ALLOWED
        .iter()
        .filter(|entry| !present.contains(entry))
        .map(|(file, path)| format!("src/{file} no longer uses {path}: remove it from ALLOWED"))
        .collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "layering of src/ (see docs/architecture.md):\n{}",
        new.iter()
            .chain(&gone)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker is not blind: in every file under src/ with a line `use crate::api...`, it finds
/// a reference to `api` on that line (a literal or comment misread would blank the rest).
#[test]
fn the_checker_sees_every_use_of_the_contract() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = 0;
    for path in rust_files(&src) {
        let module = module_path(path.strip_prefix(&src).expect("under src/"));
        let text = std::fs::read_to_string(&path).expect("read a source file");
        let found: BTreeSet<(usize, String)> =
            references(&code_only(&text), &module).into_iter().collect();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("use crate::api") || t.starts_with("pub use crate::api") {
                seen += 1;
                assert!(
                    found.contains(&(n + 1, "api".to_string())),
                    "{}:{} not seen",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    assert!(seen > 0, "no `use crate::api` under src/ at all");
}

/// The checker itself: what counts as a reference and what does not.
#[test]
fn references_are_found_in_code_only() {
    let agent_ha = vec!["agent".to_string(), "ha".to_string()];
    let agent_mod = vec!["agent".to_string()];
    let pg_conf = vec![
        "agent".to_string(),
        "postgres".to_string(),
        "conf".to_string(),
    ];
    let cases: &[(&str, &[String], &[&str])] = &[
        ("use crate::operator::Foo;", &agent_ha, &["operator"]),
        (
            "use crate::{api::X, cli::{a, b}};",
            &agent_ha,
            &["api", "cli"],
        ),
        ("let x = crate::events::event();", &agent_ha, &["events"]),
        ("use pgwarden::cli;", &agent_ha, &["cli"]),
        ("use super::dcs::Dcs;", &agent_ha, &[]),
        ("use super::super::operator::X;", &agent_ha, &["operator"]),
        ("use super::cli::X;", &agent_mod, &["cli"]),
        ("use super::super::dcs::X;", &pg_conf, &[]),
        ("use super::super::super::cli::X;", &pg_conf, &["cli"]),
        ("// use crate::operator::X;", &agent_ha, &[]),
        ("/* crate::operator */ let a = 1;", &agent_ha, &[]),
        (r#"let s = "crate::operator::X";"#, &agent_ha, &[]),
        ("let s = r#\"super::super::cli\"#;", &agent_ha, &[]),
        ("let c = '\"'; use crate::cli;", &agent_ha, &["cli"]),
        (
            "fn f<'a>(x: &'a str) -> crate::api::Y {}",
            &agent_ha,
            &["api"],
        ),
        (
            "mod tests {\n    use super::super::dcs::X;\n}",
            &agent_ha,
            &[],
        ),
        (
            "mod tests {\n    use super::super::super::cli::X;\n}",
            &agent_ha,
            &["cli"],
        ),
        (
            "mod tests {\n}\nuse super::super::cli::X;",
            &agent_ha,
            &["cli"],
        ),
    ];
    for (src, module, want) in cases {
        let got: Vec<String> = references(&code_only(src), module)
            .into_iter()
            .map(|(_, top)| top)
            .collect();
        assert_eq!(got, *want, "in {src:?} of {module:?}");
    }
}

#[test]
fn module_paths_follow_the_file_layout() {
    for (file, want) in [
        ("agent/mod.rs", vec!["agent"]),
        ("agent/ha.rs", vec!["agent", "ha"]),
        ("agent/postgres/mod.rs", vec!["agent", "postgres"]),
        ("api/cluster.rs", vec!["api", "cluster"]),
        ("lib.rs", vec![]),
    ] {
        assert_eq!(module_path(Path::new(file)), want, "{file}");
    }
}
