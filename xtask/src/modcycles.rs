//! The check that `capture-daemon`'s top-level modules import each other in one direction only
//! (run by `cargo xtask test`). Every `use` and path in non-test code that leaves its own
//! top-level module (`crate::x::…`, or `super::…` climbing out of it) is an edge; a strongly
//! connected group of two or more modules is a cycle, reported with the imports that make it.
//! `lib.rs` and `main.rs` are the composition root and may import anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use syn::visit::Visit;

/// One import that crosses from one top-level module into another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
}

/// Fails with the cycles among the top-level modules of the crate whose sources are in `src`.
pub fn check(src: &Path) -> anyhow::Result<()> {
    let edges = edges(src)?;
    let cycles = cycles(&edges);
    if cycles.is_empty() {
        println!("module dependencies of {}: no cycles", src.display());
        return Ok(());
    }
    let mut report = String::new();
    for group in &cycles {
        let _ = writeln!(report, "cycle between {}:", group.join(", "));
        for e in edges
            .iter()
            .filter(|e| group.contains(&e.from) && group.contains(&e.to))
        {
            let _ = writeln!(
                report,
                "  {} -> {} ({}:{})",
                e.from,
                e.to,
                e.file.display(),
                e.line
            );
        }
    }
    bail!("module cycles in {}:\n{report}", src.display())
}

/// Crates a consumer of captured traffic must never compile: the node agent and what only it
/// needs (eBPF loading, the Kubernetes client, /proc parsing).
const NODE_AGENT_ONLY: [&str; 5] = ["capture-daemon", "aya", "kube", "k8s-openapi", "procfs"];

/// Fails when `package`'s normal dependency tree contains the node agent or what only it needs
/// (the collector and the `capture` CLI depend on the model crate, never on the daemon).
pub fn check_layering(root: &Path, package: &str) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .current_dir(root)
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let found: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| NODE_AGENT_ONLY.contains(name))
        .collect();
    if !found.is_empty() {
        bail!(
            "{package} depends on {found:?}: it must depend on capture-model, never on the node agent"
        );
    }
    println!("{package}: no node-agent dependencies");
    Ok(())
}

fn edges(src: &Path) -> anyhow::Result<BTreeSet<Edge>> {
    let mut out = BTreeSet::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let module = module_path(rel);
        let Some(top) = module.first().cloned() else {
            continue; // lib.rs, main.rs: the composition root
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut v = Imports {
            module: &module,
            found: Vec::new(),
        };
        v.visit_file(&ast);
        for (target, line) in v.found {
            if target != top {
                out.insert(Edge {
                    from: top.clone(),
                    to: target,
                    file: rel.to_path_buf(),
                    line,
                });
            }
        }
    }
    Ok(out)
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `conn/mod.rs` -> [conn], `output/export/spool.rs` -> [output, export, spool],
/// `lib.rs`/`main.rs` -> [].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

struct Imports<'m> {
    module: &'m [String],
    /// Top-level module named by each crate-relative import, with its line.
    found: Vec<(String, usize)>,
}

impl Imports<'_> {
    /// The top-level module a path starting with `segments` names, if it is crate-relative.
    fn top_of(&self, segments: &[String]) -> Option<String> {
        match segments.first()?.as_str() {
            "crate" => segments.get(1).cloned(),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = self.module.len().checked_sub(ups)?;
                if base == 0 {
                    segments.get(ups).cloned()
                } else {
                    self.module.first().cloned()
                }
            }
            _ => None,
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(prefix, line);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(prefix, line);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.record(prefix, line),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }

    fn record(&mut self, segments: &[String], line: usize) {
        if let Some(top) = self.top_of(segments) {
            self.found.push((top, line));
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if is_cfg_test(&u.attrs) {
            return;
        }
        let line = u.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &u.tree, line);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = p
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        self.record(&segments, line);
        syn::visit::visit_path(self, p);
    }
}

/// Groups of two or more modules that reach each other (Tarjan's strongly connected
/// components), each sorted, in a stable order.
fn cycles(edges: &BTreeSet<Edge>) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
        graph.entry(&e.to).or_default();
    }
    let nodes: Vec<&str> = graph.keys().copied().collect();
    let index_of: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let adj: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| graph[n].iter().map(|t| index_of[t]).collect())
        .collect();
    let mut t = Tarjan {
        adj: &adj,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        next: 0,
        groups: Vec::new(),
    };
    for v in 0..nodes.len() {
        if t.index[v].is_none() {
            t.connect(v);
        }
    }
    let mut out: Vec<Vec<String>> = t
        .groups
        .into_iter()
        .filter(|g| g.len() > 1)
        .map(|g| {
            let mut names: Vec<String> = g.into_iter().map(|i| nodes[i].to_owned()).collect();
            names.sort();
            names
        })
        .collect();
    out.sort();
    out
}

struct Tarjan<'a> {
    adj: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    groups: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn connect(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.adj[v] {
            match self.index[w] {
                None => {
                    self.connect(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut group = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                group.push(w);
                if w == v {
                    break;
                }
            }
            self.groups.push(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_two_module_cycle_is_reported_with_its_imports() {
        let dir = tree(&[
            ("lib.rs", "pub mod a; pub mod b; use crate::a::X;"),
            ("a.rs", "use crate::b::Y;\npub struct X;"),
            ("b/mod.rs", "pub mod inner;"),
            ("b/inner.rs", "pub fn f() { let _ = crate::a::X; }"),
        ]);
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cycle between a, b:"), "{err}");
        assert!(err.contains("a -> b (a.rs:1)"), "{err}");
        assert!(err.contains("b -> a (b/inner.rs:1)"), "{err}");
    }

    #[test]
    fn one_way_imports_groups_and_super_are_fine() {
        let dir = tree(&[
            ("main.rs", "use crate::c::Z;"),
            ("a.rs", "use crate::{b::{self, Y}, c};"),
            ("b/mod.rs", "pub mod inner; use super::c::Z;"),
            ("b/inner.rs", "use super::Y; use super::super::c::Z;"),
            ("c.rs", "pub struct Z;"),
        ]);
        check(dir.path()).unwrap();
        let e = edges(dir.path()).unwrap();
        let pairs: BTreeSet<(&str, &str)> =
            e.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
        assert_eq!(pairs, BTreeSet::from([("a", "b"), ("a", "c"), ("b", "c")]));
    }

    #[test]
    fn test_code_does_not_count() {
        let dir = tree(&[
            ("a.rs", "use crate::b::Y;"),
            (
                "b.rs",
                "pub struct Y;\n#[cfg(test)]\nmod tests { use crate::a; }\n#[cfg(test)]\nfn t() { crate::a::f(); }",
            ),
        ]);
        check(dir.path()).unwrap();
    }

    #[test]
    fn a_three_module_cycle_through_super_paths() {
        let dir = tree(&[
            ("a/mod.rs", "pub mod x;"),
            ("a/x.rs", "use super::super::b::B;"),
            ("b.rs", "use crate::c::C;"),
            ("c.rs", "use crate::a::x;"),
        ]);
        let err = check(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cycle between a, b, c:"), "{err}");
    }
}

#[cfg(test)]
mod daemon {
    /// The real tree, so a cycle also fails `cargo test`, not only `cargo xtask test`.
    #[test]
    fn capture_daemon_has_no_module_cycles() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../capture-daemon/src");
        super::check(&src).unwrap();
    }

    #[test]
    fn the_collector_never_compiles_the_node_agent() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        super::check_layering(&root, "capture-collector").unwrap();
    }
}
