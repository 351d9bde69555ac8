//! The crate's module graph, read from the sources: no cycle between the top-level
//! modules of `src/`, and the layering rules (lower layers never import higher ones):
//!
//! - nothing imports `server`;
//! - `http` never imports `capability`;
//! - a capability (`src/capability/<a>/`) never imports another one
//!   (`crate::capability::<b>`);
//! - `core` imports nothing but `core`;
//! - `mail` imports nothing but `core`.
//!
//! Every `src/**/*.rs` file is read with comments, doc comments and string/char literals
//! blanked out and `#[cfg(test)]` items (and test-only `mod x;` files) removed. Each
//! `crate::` / `$crate::` path (use trees flattened) and each `super::` path that climbs
//! to the crate root names a top-level module; a root re-export (`crate::ServerAuth`) is
//! followed to the module it comes from (read from `lib.rs`). `lib.rs` itself is the
//! facade and is not a node. Limitation: `super::` is counted from the file's module, so
//! an inline (non-test) `mod` that climbs out of its file with `super::super::` would be
//! misread; the crate has none.
//!
//! The analysis is a handful of small functions over in-memory files; the unit tests at
//! the end run them on tiny hand-made crates that break each rule, so this test is known
//! to fail when the graph does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules it references.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// One reference from a file to a module path of the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// The file, relative to `src/`.
    file: PathBuf,
    /// 1-based line of the reference.
    line: usize,
    /// The module path of the file (`["capability", "account"]`).
    from: Vec<String>,
    /// The module path referenced, from the crate root (`["session", "store"]`); at least
    /// the top-level module.
    to: Vec<String>,
}

impl Reference {
    fn at(&self) -> String {
        format!("src/{}:{}", self.file.display(), self.line)
    }
}

// ---- reading the sources -------------------------------------------------------------------

/// `text` with comments (line, block, doc), string literals (plain, byte, raw) and char
/// literals replaced by spaces; newlines are kept, so lines still match the file.
fn strip_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i == 1 || !ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            // A raw string r"…", r#"…"#, br"…" (or an `r#ident`, left alone).
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            let mut end = j + 1;
            while end < c.len() {
                if c[end] == '"' && (0..hashes).all(|h| c.get(end + 1 + h) == Some(&'#')) {
                    end += 1 + hashes;
                    break;
                }
                end += 1;
            }
            for &ch in &c[i..end.min(c.len())] {
                blank(&mut out, ch);
            }
            i = end;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{1F980}'); a lifetime has no closing quote.
            let mut end = if next == Some('\\') { i + 3 } else { i + 2 };
            while end < c.len() && c[end] != '\'' {
                end += 1;
            }
            for &ch in &c[i..(end + 1).min(c.len())] {
                blank(&mut out, ch);
            }
            i = end + 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Index of the bracket closing the one at `open` (`(`/`[`/`{`), in stripped text.
fn matching(c: &[char], open: usize) -> usize {
    let (o, cl) = match c[open] {
        '(' => ('(', ')'),
        '[' => ('[', ']'),
        _ => ('{', '}'),
    };
    let mut depth = 0usize;
    for (i, &ch) in c.iter().enumerate().skip(open) {
        if ch == o {
            depth += 1;
        } else if ch == cl {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    c.len() - 1
}

/// Removes every item under `#[cfg(test)]` from stripped text (blanked, lines kept).
/// Returns the text and the names of test-only modules declared as `mod name;`.
fn strip_cfg_test(text: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut c: Vec<char> = text.chars().collect();
    let mut test_mods = Vec::new();
    let mut from = 0;
    loop {
        let s: String = c.iter().collect();
        let Some(found) = s[byte_of(&c, from)..].find(ATTR) else {
            break;
        };
        let start = char_of(&s, byte_of(&c, from) + found);
        let mut i = start + ATTR.chars().count();
        // Further attributes of the same item.
        loop {
            while i < c.len() && c[i].is_whitespace() {
                i += 1;
            }
            if c.get(i) == Some(&'#') && c.get(i + 1) == Some(&'[') {
                i = matching(&c, i + 1) + 1;
            } else {
                break;
            }
        }
        // The item ends at its first `;` or at the `}` closing its first `{`.
        let mut end = i;
        while end < c.len() && c[end] != ';' && c[end] != '{' {
            end += 1;
        }
        if end < c.len() && c[end] == '{' {
            end = matching(&c, end);
        } else {
            let head: String = c[i..end.min(c.len())].iter().collect();
            let words: Vec<&str> = head.split_whitespace().collect();
            if let Some(pos) = words.iter().position(|w| *w == "mod")
                && let Some(name) = words.get(pos + 1)
            {
                test_mods.push((*name).to_owned());
            }
        }
        let end = end.min(c.len() - 1);
        for ch in &mut c[start..=end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        from = end + 1;
    }
    (c.into_iter().collect(), test_mods)
}

fn byte_of(c: &[char], index: usize) -> usize {
    c[..index.min(c.len())].iter().map(|ch| ch.len_utf8()).sum()
}

fn char_of(s: &str, byte: usize) -> usize {
    s[..byte].chars().count()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The tokens of stripped text, each with its 1-based line.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// Flattens the path or use tree starting at `toks[i]` under `prefix` into `out`;
/// returns the index after it.
fn path_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(name)) => {
                path.push(name.clone());
                i += 1;
                if toks.get(i).map(|t| &t.0) == Some(&Tok::PathSep) {
                    i += 1;
                } else {
                    out.push(path);
                    return i;
                }
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        None => return i,
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        _ => {
                            i = path_tree(toks, i, &path, out);
                            // Skip an `as alias`.
                            while let Some((t, _)) = toks.get(i) {
                                if matches!(t, Tok::Punct(',') | Tok::Punct('}')) {
                                    break;
                                }
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                out.push(path);
                return i;
            }
        }
    }
}

/// Every path of the crate named in stripped `text` of a file of module `module`, from the
/// crate root, with its line: `crate::…` / `$crate::…` anywhere, and `super::…` that
/// climbs to the crate root or stays inside the file's top-level module. Paths that do
/// not start at the root (`self::`, bare names, extern crates) are left out.
fn crate_paths(text: &str, module: &[String]) -> Vec<(Vec<String>, usize)> {
    let toks = tokens(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let after_sep = i > 0 && toks[i - 1].0 == Tok::PathSep;
        let line = toks[i].1;
        let base: Option<(Vec<String>, usize)> = match &toks[i].0 {
            Tok::Ident(w) if w == "crate" && !after_sep => {
                (toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep)).then(|| (Vec::new(), i + 2))
            }
            Tok::Ident(w) if w == "super" && !after_sep => {
                let mut j = i;
                let mut up = 0;
                while toks.get(j).map(|t| &t.0) == Some(&Tok::Ident("super".into()))
                    && toks.get(j + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                {
                    up += 1;
                    j += 2;
                }
                (up > 0).then(|| (module[..module.len().saturating_sub(up)].to_vec(), j))
            }
            _ => None,
        };
        match base {
            Some((prefix, start)) => {
                let mut paths = Vec::new();
                i = path_tree(&toks, start, &prefix, &mut paths);
                out.extend(
                    paths
                        .into_iter()
                        .filter(|p| !p.is_empty())
                        .map(|p| (p, line)),
                );
            }
            None => i += 1,
        }
    }
    out
}

/// The module path of a file relative to `src/`: `http/guard.rs` → `[http, guard]`,
/// `http/mod.rs` → `[http]`, `lib.rs` → `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file(s) a `mod name;` in `file` may live in.
fn child_files(file: &Path, name: &str) -> [PathBuf; 2] {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
    let dir = match stem.as_deref() {
        Some("mod" | "lib" | "main") => file.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => file.with_extension(""),
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
}

/// The result of reading a crate.
#[derive(Debug, Default)]
struct Analysis {
    /// Top-level modules (the nodes).
    modules: BTreeSet<String>,
    /// Every reference to another module path of the crate.
    references: Vec<Reference>,
    /// `crate::X` that is neither a module nor a root re-export, with where it is.
    unresolved: Vec<String>,
}

impl Analysis {
    fn graph(&self) -> Graph {
        let mut g: Graph = self
            .modules
            .iter()
            .map(|m| (m.clone(), BTreeSet::new()))
            .collect();
        for r in &self.references {
            if r.from[0] != r.to[0] {
                g.entry(r.from[0].clone())
                    .or_default()
                    .insert(r.to[0].clone());
            }
        }
        g
    }

    /// The first reference behind the edge `from -> to`.
    fn evidence(&self, from: &str, to: &str) -> String {
        self.references
            .iter()
            .find(|r| r.from[0] == from && r.to[0] == to)
            .map(Reference::at)
            .unwrap_or_default()
    }
}

/// Reads a crate given as `path relative to src/ → source text`.
fn analyse(files: &BTreeMap<PathBuf, String>) -> Analysis {
    let stripped: BTreeMap<&PathBuf, (String, Vec<String>)> = files
        .iter()
        .map(|(p, text)| (p, strip_cfg_test(&strip_comments_and_literals(text))))
        .collect();
    let test_only: BTreeSet<PathBuf> = stripped
        .iter()
        .flat_map(|(p, (_, mods))| mods.iter().flat_map(|m| child_files(p, m)))
        .collect();
    let mut analysis = Analysis {
        modules: files
            .keys()
            .map(|p| module_of(p))
            .filter_map(|m| m.first().cloned())
            .collect(),
        ..Analysis::default()
    };
    // Root re-exports: exported name → the module path it comes from (`ServerAuth` →
    // `[server]`), so `crate::ServerAuth` becomes `crate::server::ServerAuth`.
    let mut reexports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some((lib, _)) = stripped.get(&PathBuf::from("lib.rs")) {
        let toks = tokens(lib);
        for i in 0..toks.len().saturating_sub(1) {
            if toks[i].0 == Tok::Ident("use".into()) {
                let mut paths = Vec::new();
                path_tree(&toks, i + 1, &[], &mut paths);
                for mut p in paths {
                    if p.first().map(String::as_str) == Some("crate") {
                        p.remove(0);
                    }
                    if let Some(name) = p.pop()
                        && p.first().is_some_and(|m| analysis.modules.contains(m))
                    {
                        reexports.insert(name, p);
                    }
                }
            }
        }
    }
    for (file, (text, _)) in &stripped {
        let from = module_of(file);
        if from.is_empty() || test_only.contains(*file) {
            continue;
        }
        for (path, line) in crate_paths(text, &from) {
            let to = if analysis.modules.contains(&path[0]) {
                path
            } else if let Some(module) = reexports.get(&path[0]) {
                module.iter().chain(&path).cloned().collect()
            } else {
                analysis.unresolved.push(format!(
                    "crate::{} at src/{}:{line}",
                    path.join("::"),
                    file.display()
                ));
                continue;
            };
            analysis.references.push(Reference {
                file: (*file).clone(),
                line,
                from: from.clone(),
                to,
            });
        }
    }
    analysis
}

// ---- the rules -----------------------------------------------------------------------------

/// A cycle of `graph` as `[a, b, …, a]`, or `None`. Deterministic (depth first, in
/// name order).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit<'a>(
        v: &'a str,
        graph: &'a Graph,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(v, Mark::Open);
        stack.push(v);
        for w in graph.get(v).into_iter().flatten() {
            match marks.get(w.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let pos = stack.iter().position(|s| *s == w.as_str()).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[pos..].iter().map(|s| (*s).to_owned()).collect();
                    cycle.push(w.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(w, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(v, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for v in graph.keys() {
        if marks.get(v.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(v, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Every reference that breaks a layering rule, as `rule: from -> to at file:line`.
/// `capabilities` are the names under `src/capability/`.
fn layering_violations(references: &[Reference], capabilities: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for r in references {
        let (from, to) = (r.from[0].as_str(), r.to[0].as_str());
        let mut broken = |rule: &str| {
            out.push(format!(
                "{rule}: crate::{} from {} at {}",
                r.to.join("::"),
                r.from.join("::"),
                r.at()
            ));
        };
        if to == "server" && from != "server" {
            broken("nothing imports `server`");
        }
        if from == "http" && to == "capability" {
            broken("`http` never imports `capability`");
        }
        if from == "core" && to != "core" {
            broken("`core` imports nothing but `core`");
        }
        if from == "mail" && to != "mail" && to != "core" {
            broken("`mail` imports nothing but `core`");
        }
        if from == "capability"
            && to == "capability"
            && let (Some(a), Some(b)) = (r.from.get(1), r.to.get(1))
            && a != b
            && capabilities.contains(a)
            && capabilities.contains(b)
        {
            broken("a capability never imports another capability");
        }
    }
    out
}

/// Renders a graph one module a line, as `modcycles.py` does.
fn render(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            format!(
                "{m} -> {}",
                if to.is_empty() {
                    "-".into()
                } else {
                    to.join(", ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- the crate -----------------------------------------------------------------------------

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read_rs(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_rs(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), text);
        }
    }
}

fn the_crate() -> (Analysis, BTreeSet<String>) {
    let src = src_dir();
    let mut files = BTreeMap::new();
    read_rs(&src, &src, &mut files);
    let capabilities = files
        .keys()
        .map(|p| module_of(p))
        .filter(|m| m.len() >= 2 && m[0] == "capability")
        .map(|m| m[1].clone())
        .collect();
    (analyse(&files), capabilities)
}

#[test]
fn src_module_graph_has_no_cycle() {
    let (analysis, _) = the_crate();
    assert!(
        analysis.unresolved.is_empty(),
        "paths the check cannot place (teach `analyse` about them):\n{}",
        analysis.unresolved.join("\n")
    );
    let graph = analysis.graph();
    eprintln!("{}", render(&graph));
    // The reader works: the crate's graph is not empty.
    assert!(graph.len() >= 10, "{}", render(&graph));
    assert!(graph["server"].contains("core"), "{}", render(&graph));
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                format!(
                    "  {} -> {} at {}",
                    w[0],
                    w[1],
                    analysis.evidence(&w[0], &w[1])
                )
            })
            .collect();
        panic!(
            "module cycle: {}\n{}\n\nthe graph:\n{}",
            cycle.join(" -> "),
            edges.join("\n"),
            render(&graph)
        );
    }
}

#[test]
fn src_imports_follow_the_layering_rules() {
    let (analysis, capabilities) = the_crate();
    assert!(capabilities.contains("account"), "{capabilities:?}");
    let broken = layering_violations(&analysis.references, &capabilities);
    assert!(
        broken.is_empty(),
        "layering rules broken:\n{}\n\nthe graph:\n{}",
        broken.join("\n"),
        render(&analysis.graph())
    );
}

// ---- the checks themselves, on hand-made crates --------------------------------------------

fn crate_of(files: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
    files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect()
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (a, b) in edges {
        g.entry((*a).to_owned())
            .or_default()
            .insert((*b).to_owned());
        g.entry((*b).to_owned()).or_default();
    }
    g
}

#[test]
fn find_cycle_reports_the_cycle_path() {
    let g = graph_of(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]);
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let g = graph_of(&[("core", "core"), ("x", "y")]);
    assert_eq!(find_cycle(&g), Some(vec!["core".into(), "core".into()]));
    // A diamond is not a cycle.
    let dag = graph_of(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]);
    assert_eq!(find_cycle(&dag), None);
}

#[test]
fn a_crate_with_a_cycle_fails_and_names_it() {
    let files = crate_of(&[
        (
            "lib.rs",
            "pub mod db;\npub mod core;\npub use crate::db::Database;\n",
        ),
        (
            "core/mod.rs",
            "mod clock;\n/// Not [`crate::db`] (a doc link).\npub struct Error;\n",
        ),
        (
            "core/clock.rs",
            "// use crate::db::Database;\nfn f() -> &'static str { let _ = ['\\'', '\"']; \"crate::db::x\" }\nfn g() -> Option<crate::Database> { None }\n",
        ),
        (
            "db/mod.rs",
            "use crate::core::Error;\npub struct Database;\n",
        ),
    ]);
    let analysis = analyse(&files);
    assert!(analysis.unresolved.is_empty(), "{:?}", analysis.unresolved);
    let graph = analysis.graph();
    assert_eq!(render(&graph), "core -> db\ndb -> core");
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["core".into(), "db".into(), "core".into()])
    );
    // Only the real path counts: not the comment, the doc link or the string.
    assert_eq!(analysis.evidence("core", "db"), "src/core/clock.rs:3");
}

#[test]
fn layering_rules_catch_each_kind_of_break() {
    let files = crate_of(&[
        (
            "lib.rs",
            "pub mod capability; pub mod core; pub mod http; pub mod server;\npub use server::ServerAuth;\n",
        ),
        ("core/mod.rs", "use crate::http::Envelope;\n"),
        (
            "http/mod.rs",
            "use crate::{core, capability::Capability};\nfn f(_: &crate::ServerAuth) {}\n",
        ),
        (
            "capability/mod.rs",
            "pub mod account;\npub mod workspace;\npub trait Capability {}\n",
        ),
        (
            "capability/account/mod.rs",
            "use super::Capability;\nuse crate::capability::{self, workspace::Member};\nuse super::super::core::Error;\n",
        ),
        (
            "capability/workspace.rs",
            "use crate::capability::Capability;\n",
        ),
        (
            "server/mod.rs",
            "use crate::{capability::{account, workspace}, http, core};\n#[cfg(test)]\nmod tests {\n    use crate::server::x;\n}\n",
        ),
    ]);
    let analysis = analyse(&files);
    assert!(analysis.unresolved.is_empty(), "{:?}", analysis.unresolved);
    let caps: BTreeSet<String> = ["account".to_owned(), "workspace".to_owned()].into();
    assert_eq!(
        layering_violations(&analysis.references, &caps),
        vec![
            "a capability never imports another capability: crate::capability::workspace::Member from capability::account at src/capability/account/mod.rs:2",
            "`core` imports nothing but `core`: crate::http::Envelope from core at src/core/mod.rs:1",
            "`http` never imports `capability`: crate::capability::Capability from http at src/http/mod.rs:1",
            "nothing imports `server`: crate::server::ServerAuth from http at src/http/mod.rs:2",
        ]
    );
    // `super::super::core` from capability/account climbs to the root.
    assert_eq!(
        render(&analysis.graph()),
        "capability -> core\ncore -> http\nhttp -> capability, core, server\nserver -> capability, core, http"
    );
}

#[test]
fn cfg_test_items_and_test_only_files_are_left_out() {
    let files = crate_of(&[
        ("lib.rs", "pub mod a; pub mod b;\n"),
        (
            "a/mod.rs",
            "#[cfg(test)]\nmod tests;\n#[cfg(test)]\n#[allow(unused)]\nuse crate::b::X;\n#[cfg(test)]\nmod inline {\n    fn f() { let _ = '{'; crate::b::y(); }\n}\npub fn ok(s: &'static str) -> &'static str { s }\n",
        ),
        ("a/tests.rs", "use crate::b::Z;\n"),
        ("b.rs", "pub struct X;\n"),
    ]);
    let analysis = analyse(&files);
    assert!(analysis.references.is_empty(), "{:?}", analysis.references);
    assert_eq!(render(&analysis.graph()), "a -> -\nb -> -");
}

#[test]
fn unknown_root_names_are_reported() {
    let files = crate_of(&[
        ("lib.rs", "pub mod a;\n"),
        ("a.rs", "use crate::Nowhere;\n"),
    ]);
    assert_eq!(
        analyse(&files).unresolved,
        vec!["crate::Nowhere at src/a.rs:1".to_owned()]
    );
}
