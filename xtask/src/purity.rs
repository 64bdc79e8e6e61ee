//! `cargo xtask purity` (also the first step of `cargo xtask test`): the
//! pure core stays pure. Every .rs file under affinity-userspace/src/{model,
//! analyze,report}, in-file unit tests included, may not name `host`,
//! `kernel`, `collect` or `apply` of the crate, nor `std::fs`,
//! `std::process`, `libc`, `nix`, `aya` or `procfs`. report/watch/term.rs,
//! the live view's terminal handling, is the one exemption.
//!
//! The files are lexed (proc-macro2), so comments and string literals never
//! count, and paths are seen wherever they are: `use` trees with their
//! `{..}` groups, fully qualified paths in code and inside macro calls,
//! `extern crate`, and `super::` climbing out of the folder.

use anyhow::{Context as _, Result, bail};
use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use std::path::{Path, PathBuf};

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

/// Runs the check on the workspace and fails naming every violation.
pub fn run(src: Option<&Path>) -> Result<()> {
    let src = src.map_or_else(
        || crate::util::workspace_root().join("affinity-userspace/src"),
        Path::to_path_buf,
    );
    let violations = check_tree(&src)?;
    if violations.is_empty() {
        println!("xtask: purity: model/, analyze/ and report/ are pure");
        return Ok(());
    }
    for v in &violations {
        eprintln!("{v}");
    }
    bail!(
        "purity: {} violation(s): model/, analyze/ and report/ may not touch the system \
         (move the read to host/ or the test to tests/, and pass the value in)",
        violations.len()
    )
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
    let tokens: TokenStream = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{rel}: does not lex as Rust: {e}"))?;
    let mut paths = Vec::new();
    walk(tokens, &module_of(rel), &mut paths);
    Ok(paths
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

/// A path being read: its segments (resolved against `module`) and the
/// line it starts on.
type Found = (Vec<String>, usize);

fn is_punct(t: &TokenTree, c: char) -> bool {
    matches!(t, TokenTree::Punct(p) if p.as_char() == c)
}

/// `::` at `i` (two joint colons).
fn is_path_sep(toks: &[TokenTree], i: usize) -> bool {
    matches!(toks.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && toks.get(i + 1).is_some_and(|t| is_punct(t, ':'))
}

fn ident(t: Option<&TokenTree>) -> Option<String> {
    match t {
        Some(TokenTree::Ident(i)) => Some(i.to_string().trim_start_matches("r#").to_string()),
        _ => None,
    }
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

/// Collects every path in `ts` (recursing into groups and inline modules).
fn walk(ts: TokenStream, module: &[String], out: &mut Vec<Found>) {
    let toks: Vec<TokenTree> = ts.into_iter().collect();
    let mut i = 0;
    while i < toks.len() {
        // `mod name { .. }`: the body is one module deeper.
        if ident(toks.get(i)).as_deref() == Some("mod")
            && let (Some(name), Some(TokenTree::Group(g))) =
                (ident(toks.get(i + 1)), toks.get(i + 2))
            && g.delimiter() == Delimiter::Brace
        {
            let mut inner = module.to_vec();
            inner.push(name);
            walk(g.stream(), &inner, out);
            i += 3;
            continue;
        }
        // `extern crate name`.
        if ident(toks.get(i)).as_deref() == Some("extern")
            && ident(toks.get(i + 1)).as_deref() == Some("crate")
            && let Some(name) = ident(toks.get(i + 2))
        {
            out.push((vec![name], line_of(&toks[i])));
            i += 3;
            continue;
        }
        // `use tree;`
        if ident(toks.get(i)).as_deref() == Some("use") {
            let end = (i + 1..toks.len())
                .find(|&j| is_punct(&toks[j], ';'))
                .unwrap_or(toks.len());
            use_tree(&toks[i + 1..end], &[], module, out);
            i = end + 1;
            continue;
        }
        match &toks[i] {
            TokenTree::Group(g) => {
                walk(g.stream(), module, out);
                i += 1;
            }
            TokenTree::Ident(_) => {
                let (segs, next) = read_path(&toks, i);
                // A one-segment name is a crate only in `use`/`extern crate`.
                if segs.len() > 1 {
                    out.push((resolve(module, segs), line_of(&toks[i])));
                }
                i = next;
            }
            t if is_path_sep(&toks, i) && matches!(toks.get(i + 2), Some(TokenTree::Ident(_))) => {
                // `::std::fs`: a leading `::` names a crate.
                let line = line_of(t);
                let (segs, next) = read_path(&toks, i + 2);
                out.push((segs, line));
                i = next;
            }
            _ => i += 1,
        }
    }
}

/// Reads `a::b::c` from `i` (an ident); returns the segments and the index
/// after the path. Generic arguments (`Vec::<u8>::new`) end it.
fn read_path(toks: &[TokenTree], i: usize) -> (Vec<String>, usize) {
    let mut segs = vec![ident(toks.get(i)).unwrap_or_default()];
    let mut j = i + 1;
    while is_path_sep(toks, j) {
        match ident(toks.get(j + 2)) {
            Some(s) => {
                segs.push(s);
                j += 3;
            }
            None => break,
        }
    }
    (segs, j)
}

/// Collects the paths of a `use` tree (`toks` without `use` and `;`):
/// `a::b`, `a::{b, c::d}`, `a::*`, `a as b`.
fn use_tree(toks: &[TokenTree], prefix: &[String], module: &[String], out: &mut Vec<Found>) {
    // Split the tree at top-level commas.
    for item in toks.split(|t| is_punct(t, ',')) {
        let mut segs = prefix.to_vec();
        let mut j = 0;
        if is_path_sep(item, 0) {
            j = 2;
        }
        let line = item.first().map(line_of).unwrap_or(0);
        loop {
            match item.get(j) {
                Some(TokenTree::Ident(_)) => {
                    let name = ident(item.get(j)).unwrap_or_default();
                    if name == "as" {
                        break;
                    }
                    segs.push(name);
                    j += 1;
                }
                Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                    let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                    use_tree(&inner, &segs, module, out);
                    segs.clear();
                    break;
                }
                _ => break,
            }
            if is_path_sep(item, j) {
                j += 2;
            } else {
                break;
            }
        }
        if !segs.is_empty() {
            out.push((resolve(module, segs), line));
        }
    }
}

fn line_of(t: &TokenTree) -> usize {
    t.span().start().line
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
