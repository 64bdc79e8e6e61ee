//! The pure core stays pure (run with the crate's tests, so by `cargo
//! xtask test`'s unit phase; `cargo test -p affinity-userspace --test
//! purity` alone). Every .rs file under affinity-userspace/src/{model,
//! analyze,report}, in-file unit tests included, may not name `host`,
//! `kernel`, `collect` or `apply` of the crate, nor `std::fs`,
//! `std::process`, `libc`, `nix`, `aya` or `procfs`. report/watch/term.rs,
//! the live view's terminal handling, is the one exemption.
//!
//! The files are parsed (syn), so comments and string literals never
//! count, and paths are seen wherever they are: `use` trees with their
//! `{..}` groups, fully qualified paths in code, types and patterns, inside
//! macro calls and attributes, `extern crate`, and `super::` climbing out
//! of the folder.

use anyhow::{Context as _, Result};
use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use std::path::{Path, PathBuf};
use syn::UseTree;
use syn::visit::{self, Visit};

/// The folders that must stay pure, under affinity-userspace/src.
const PURE: &[&str] = &["model", "analyze", "report"];
/// Files exempt from the rule (terminal handling of the live view).
const EXEMPT: &[&str] = &["report/watch/term.rs"];
/// Modules of the crate the pure folders may not use.
const IMPURE_MODULES: &[&str] = &["host", "kernel", "collect", "apply"];
/// Paths (prefixes) of other crates the pure folders may not use.
const FORBIDDEN: &[&[&str]] = &[
    &["std", "fs"],
    &["std", "process"],
    &["libc"],
    &["nix"],
    &["aya"],
    &["aya_log"],
    &["aya_obj"],
    &["procfs"],
];

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path relative to affinity-userspace/src.
    pub file: String,
    pub line: usize,
    /// The path as written, resolved (`crate::host::procs`).
    pub path: String,
    /// Which rule it breaks.
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "affinity-userspace/src/{}:{}: {} ({})",
            self.file, self.line, self.path, self.rule
        )
    }
}

/// The crate's own tree: fails naming every violation.
#[test]
fn model_analyze_and_report_touch_nothing_of_the_system() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let violations = check_tree(&src).unwrap();
    let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "{} violation(s): model/, analyze/ and report/ may not touch the system \
         (move the read to host/ or the test to tests/, and pass the value in):\n{}",
        violations.len(),
        list.join("\n")
    );
}

/// Every violation in the pure folders under `src`.
pub fn check_tree(src: &Path) -> Result<Vec<Violation>> {
    let mut out = Vec::new();
    for dir in PURE {
        let mut files = Vec::new();
        rs_files(&src.join(dir), &mut files)?;
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(src)
                .unwrap_or(&f)
                .to_string_lossy()
                .into_owned();
            if EXEMPT.contains(&rel.as_str()) {
                continue;
            }
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            out.extend(check_file(&rel, &text)?);
        }
    }
    Ok(out)
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            rs_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The module path of a file under src: `model/topology.rs` is
/// `[model, topology]`, `report/watch/mod.rs` is `[report, watch]`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The violations in one file's text; `rel` is its path under src.
pub fn check_file(rel: &str, text: &str) -> Result<Vec<Violation>> {
    let file = syn::parse_file(text).map_err(|e| anyhow::anyhow!("{rel}: does not parse: {e}"))?;
    let mut paths = Paths {
        module: module_of(rel),
        found: Vec::new(),
    };
    paths.visit_file(&file);
    Ok(paths
        .found
        .into_iter()
        .filter_map(|(segs, line)| {
            rule_broken(&segs).map(|rule| Violation {
                file: rel.to_string(),
                line,
                path: segs.join("::"),
                rule,
            })
        })
        .collect())
}

/// Which rule a resolved path breaks, if any.
fn rule_broken(segs: &[String]) -> Option<String> {
    if segs.first().is_some_and(|s| s == "crate")
        && let Some(m) = segs.get(1).filter(|m| IMPURE_MODULES.contains(&m.as_str()))
    {
        return Some(format!(
            "the pure core imports nothing from {m}/: pass the value in"
        ));
    }
    // `::std::fs` and `std::fs` alike.
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    FORBIDDEN
        .iter()
        .find(|f| segs.len() >= f.len() && segs[..f.len()] == f[..])
        .map(|f| format!("no {} in the pure core", f.join("::")))
}

/// Resolves a path's leading `self`/`super` against the module it is in.
fn resolve(module: &[String], segs: Vec<String>) -> Vec<String> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = segs.as_slice();
    let mut relative = false;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "super" => {
                base.pop();
                relative = true;
            }
            "self" => relative = true,
            _ => break,
        }
        rest = &rest[1..];
    }
    if !relative {
        return segs;
    }
    let mut out = vec!["crate".to_string()];
    out.extend(base);
    out.extend(rest.iter().cloned());
    out
}

/// Every path of a file, resolved against the module it is in, with the
/// line it starts on.
struct Paths {
    module: Vec<String>,
    found: Vec<(Vec<String>, usize)>,
}

impl Paths {
    fn push(&mut self, segs: Vec<String>, span: Span) {
        let segs = resolve(&self.module, segs);
        self.found.push((segs, span.start().line));
    }

    /// `a::b`, `a::{b, c::d}`, `a::*`, `a as b`.
    fn use_tree(&mut self, tree: &UseTree, prefix: &mut Vec<String>, span: Span) {
        let leaf = |me: &mut Self, ident: &syn::Ident| {
            let mut segs = prefix.clone();
            segs.push(ident.to_string());
            me.push(segs, ident.span());
        };
        match tree {
            UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(&p.tree, prefix, p.ident.span());
                prefix.pop();
            }
            UseTree::Name(n) => leaf(self, &n.ident),
            UseTree::Rename(r) => leaf(self, &r.ident),
            UseTree::Glob(_) => self.push(prefix.clone(), span),
            UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(t, prefix, span)),
        }
    }

    /// Paths in the tokens of a macro or attribute (`a::b`, `::a::b`), which
    /// syn does not parse.
    fn tokens(&mut self, ts: TokenStream) {
        let toks: Vec<TokenTree> = ts.into_iter().collect();
        let mut i = 0;
        while i < toks.len() {
            let sep = |j: usize| {
                matches!(toks.get(j), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
                    && matches!(toks.get(j + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':')
            };
            let ident = |j: usize| match toks.get(j) {
                Some(TokenTree::Ident(id)) => Some(id.to_string()),
                _ => None,
            };
            let start = if sep(i) && ident(i + 2).is_some() {
                i + 2
            } else {
                i
            };
            if let TokenTree::Group(g) = &toks[i] {
                self.tokens(g.stream());
            }
            let Some(first) = ident(start) else {
                i += 1;
                continue;
            };
            let mut segs = vec![first];
            let mut j = start + 1;
            while sep(j)
                && let Some(s) = ident(j + 2)
            {
                segs.push(s);
                j += 3;
            }
            // A one-segment name in code is not a crate.
            if segs.len() > 1 || start > i {
                self.push(segs, toks[i].span());
            }
            i = j;
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&u.tree, &mut Vec::new(), u.use_token.span);
    }

    fn visit_item_extern_crate(&mut self, e: &'ast syn::ItemExternCrate) {
        self.push(vec![e.ident.to_string()], e.ident.span());
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.segments.len() > 1 || p.leading_colon.is_some() {
            let segs = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.push(segs, p.segments[0].ident.span());
        }
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        visit::visit_macro(self, m);
    }

    /// `#[derive(aya::Pod)]` and the like.
    fn visit_meta_list(&mut self, m: &'ast syn::MetaList) {
        self.tokens(m.tokens.clone());
        visit::visit_meta_list(self, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(rel: &str, text: &str) -> Vec<(usize, String)> {
        check_file(rel, text)
            .unwrap()
            .into_iter()
            .map(|v| (v.line, v.path))
            .collect()
    }

    #[test]
    fn a_forbidden_import_is_caught_with_its_line() {
        let text = "use std::collections::BTreeMap;\nuse std::fs;\nuse procfs::process::Process;\n";
        assert_eq!(
            found("model/x.rs", text),
            vec![
                (2, "std::fs".to_string()),
                (3, "procfs::process::Process".to_string())
            ]
        );
        let v = &check_file("model/x.rs", "use crate::host::procs;").unwrap()[0];
        assert_eq!(v.to_string().split(':').nth(1), Some("1"));
        assert!(v.rule.contains("host/"), "{}", v.rule);
    }

    #[test]
    fn a_comment_or_string_mentioning_std_fs_is_not() {
        let text = r##"
            //! Reads nothing: std::fs is for host/.
            /* use crate::host::procs; */
            fn f() -> &'static str { "std::fs::read" }
            fn g() -> &'static str { r#"use libc;"# }
            fn h(x: &'static str) -> char { 'a' }
        "##;
        assert_eq!(found("report/x.rs", text), vec![]);
    }

    #[test]
    fn a_grouped_use_is_caught() {
        let text = "use crate::{a, host::x};\nuse std::{io, fs::File};\nuse crate::{model::{Trace, topology}};";
        assert_eq!(
            found("analyze/x.rs", text),
            vec![
                (1, "crate::host::x".to_string()),
                (2, "std::fs::File".to_string())
            ]
        );
    }

    #[test]
    fn qualified_paths_in_code_and_macros_are_caught() {
        let text = "fn f() {\n let a = std::fs::read(\"x\");\n assert!(::std::process::id() > 0);\n let t = crate::kernel::btf::X;\n}\n";
        assert_eq!(
            found("model/x.rs", text),
            vec![
                (2, "std::fs::read".to_string()),
                (3, "std::process::id".to_string()),
                (4, "crate::kernel::btf::X".to_string())
            ]
        );
    }

    #[test]
    fn test_modules_super_climbs_and_extern_crate_are_checked() {
        let text = "#[cfg(test)]\nmod tests {\n use super::*;\n use super::super::super::host::procs;\n}\nextern crate libc;\n";
        assert_eq!(
            found("model/x.rs", text),
            vec![
                (4, "crate::host::procs".to_string()),
                (6, "libc".to_string())
            ]
        );
        // `super` inside the folder stays in it.
        assert_eq!(
            found("report/watch/view.rs", "use super::state::X;"),
            vec![]
        );
        // Names that merely start alike are fine.
        assert_eq!(
            found("model/x.rs", "use std::fmt; fn f() { nixon::a(); }"),
            vec![]
        );
    }
}
