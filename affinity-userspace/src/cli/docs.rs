//! Shell completions and man pages, generated from the clap definition in
//! [`crate::cli`] so they cannot drift from the flags.
//!
//! The hidden `affin-trace docs` command prints one of them or writes them
//! all into a directory; `cargo xtask docs` runs it to fill `target/docs/`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory, ValueEnum};
use clap_complete::{Generator, Shell};

use crate::cli::Cli;

/// The name completions are registered for: the installed binary's.
pub const BIN: &str = "affin-trace";

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    // clap_complete panics when a write fails; generating into memory first
    // turns a closed pipe or a full disk into an error instead.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), BIN, &mut script);
    out.write_all(&script)
}

/// `Cli::command()` without its hidden subcommands (the demo's worker, the
/// benchmark floor, `docs` itself): clap_complete's generators offer hidden
/// subcommands (clap-rs/clap#1335) and clap has no way to remove one, so
/// the root is rebuilt from the same arguments and the visible subcommands.
fn visible_command() -> Command {
    let full = Cli::command();
    let root = Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned());
    root.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// Writes the `affin-trace(1)` man page (roff) to `out`.
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// `affin-trace docs`: with `out`, [`write_all`] into that directory and list
/// the files on `stdout`; else the completions for `shell`, or with `man` the
/// man page, on `stdout`. The CLI lets exactly one through; asking for none
/// is an error.
pub fn emit(
    man: bool,
    shell: Option<Shell>,
    out: Option<&Path>,
    stdout: &mut dyn Write,
) -> io::Result<()> {
    match (out, shell) {
        (Some(dir), _) => {
            for file in write_all(dir)? {
                writeln!(stdout, "{}", file.display())?;
            }
        }
        (None, Some(shell)) => completions(shell, stdout)?,
        (None, None) if man => man_page(stdout)?,
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nothing to write: give --man, --completions SHELL or --out DIR",
            ));
        }
    }
    stdout.flush()
}

/// Writes into `dir` the man pages (`affin-trace.1`, and one per visible
/// subcommand, e.g. `affin-trace-demo.1`) and `completions/` with one script
/// per shell under its conventional name (`affin-trace.bash`, `_affin-trace`
/// for zsh, ...). Creates the directories; returns the files written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    fs::create_dir_all(dir)?;
    // Building the command first gives subcommands their display names
    // ("affin-trace-demo"), which name their pages; as in clap_mangen's own
    // generate_to, the `help` subcommand gets no page.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    man_pages(cmd, dir, &mut written)?;
    let comp = dir.join("completions");
    fs::create_dir_all(&comp)?;
    for shell in Shell::value_variants() {
        let path = comp.join(shell.file_name(BIN));
        let mut file = open(&path)?;
        completions(*shell, &mut file)?;
        file.commit()?;
        written.push(path);
    }
    Ok(written)
}

fn man_pages(cmd: Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub.clone(), dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd);
    let path = dir.join(man.get_filename());
    let mut file = open(&path)?;
    man.render(&mut file)?;
    file.commit()?;
    written.push(path);
    Ok(())
}

/// An output opened by [`crate::cli::output`] (no symlinks followed, written
/// aside and renamed), its refusal as an I/O error.
fn open(path: &Path) -> io::Result<crate::cli::output::Output> {
    crate::cli::output::open(path).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bash_completion_offers_the_trace_flags() {
        let s = text(|o| completions(Shell::Bash, o));
        // The function name has "-" mangled; the command name must not be.
        assert!(
            s.lines()
                .any(|l| l.trim().starts_with("complete -F _affin__trace")
                    && l.ends_with(" affin-trace")),
            "{s}"
        );
        for flag in ["--pid", "--duration", "--tid", "--format"] {
            assert!(s.contains(flag), "{flag} missing");
        }
    }

    /// What bash offers for `affin-trace WORD<TAB>` with the script loaded.
    fn bash_offers(word: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("affin-trace.bash");
        completions(Shell::Bash, &mut fs::File::create(&script).unwrap()).unwrap();
        let run = format!(
            "source {}; COMP_WORDS=(affin-trace {word}); COMP_CWORD=1; \
             _affin__trace affin-trace {word} affin-trace; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = std::process::Command::new("bash")
            .args(["--norc", "-c", &run])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn bash_really_completes_flags_and_subcommands() {
        assert_eq!(bash_offers("--pi"), ["--pid"]);
        assert_eq!(bash_offers("--du"), ["--duration"]);
        assert_eq!(bash_offers("top"), ["topology"]);
        let hidden = bash_offers("demo-");
        assert!(hidden.is_empty(), "{hidden:?}");
    }

    #[test]
    fn completions_offer_visible_subcommands_only() {
        for shell in Shell::value_variants() {
            let s = text(|o| completions(*shell, o));
            assert!(s.contains("topology"), "{shell}");
            for hidden in Cli::command().get_subcommands().filter(|c| c.is_hide_set()) {
                let name = hidden.get_name();
                assert!(!s.contains(name), "{shell} offers hidden {name}");
            }
        }
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_binary() {
        for shell in Shell::value_variants() {
            let s = text(|o| completions(*shell, o));
            assert!(s.contains(BIN), "{shell}");
            assert!(s.contains("duration"), "{shell}");
        }
    }

    #[test]
    fn man_page_has_a_title_and_the_flags() {
        let s = text(|o| man_page(o));
        assert!(s.contains(".TH affin-trace 1"), "{s}");
        // roff writes a literal hyphen as `\-`, so "--pid" is `\-\-pid` in
        // the source and "--pid" on the rendered page.
        assert!(s.contains(r"\-\-pid"), "{s}");
        assert!(s.contains(r"\-\-duration"), "{s}");
        assert!(s.contains(".SH SUBCOMMANDS"), "{s}");
    }

    #[test]
    fn a_failed_write_is_an_error_not_a_panic() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(completions(Shell::Zsh, &mut Full).is_err());
        assert!(man_page(&mut Full).is_err());
    }

    #[test]
    fn emit_writes_what_was_asked() {
        assert!(text(|o| emit(true, None, None, o)).contains(".TH affin-trace 1"));
        let zsh = text(|o| emit(false, Some(Shell::Zsh), None, o));
        assert!(zsh.starts_with("#compdef affin-trace"), "{zsh}");
        let dir = tempfile::tempdir().unwrap();
        let listed = text(|o| emit(false, None, Some(dir.path()), o));
        // One page for affin-trace and each visible subcommand, one script per shell.
        let cmd = Cli::command();
        let pages = 1 + cmd.get_subcommands().filter(|c| !c.is_hide_set()).count();
        assert_eq!(
            listed.lines().count(),
            pages + Shell::value_variants().len()
        );
        assert!(listed.lines().all(|l| Path::new(l).is_file()), "{listed}");
        let none = emit(false, None, None, &mut Vec::new()).unwrap_err();
        assert!(none.to_string().contains("--man"), "{none}");
    }

    #[test]
    fn write_all_writes_pages_for_visible_commands_and_every_shell() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_all(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        for want in [
            "affin-trace.1",
            "affin-trace-demo.1",
            "affin-trace-topology.1",
            "completions/affin-trace.bash",
            "completions/_affin-trace",
            "completions/affin-trace.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        // Hidden helpers (the demo's worker, the benchmark floor) get no page.
        assert!(
            !names
                .iter()
                .any(|n| n.contains("worker") || n.contains("floor"))
        );
        for f in &files {
            assert!(fs::metadata(f).unwrap().len() > 0, "{}", f.display());
        }
        let demo = fs::read_to_string(dir.path().join("affin-trace-demo.1")).unwrap();
        assert!(demo.contains(".TH affin-trace-demo 1"), "{demo}");
    }
}
