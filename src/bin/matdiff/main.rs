//! The `matdiff` command line: scripts, `-e`, and the REPL.

use clap::{Parser, ValueEnum};
use matdiff::codegen::Item;
use matdiff::diff::chain::{Conventions, Layout};
use matdiff::eval::check::TOLERANCE;
use matdiff::ir::VecOrder;
use matdiff::render::Shown;
use matdiff::session::{Answer, CheckResult, Format, Options, Outcome, Session};
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

mod repl;
mod serve;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Ascii,
    Latex,
    Json,
    Numpy,
    Jax,
    Torch,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LayoutArg {
    Denominator,
    Numerator,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VecArg {
    Row,
    Col,
}

/// Symbolic matrix-differential calculus: differentials, the chain rule and
/// Magnus–Neudecker identification of derivatives.
#[derive(Debug, Parser)]
#[command(
    name = "matdiff",
    version,
    about,
    after_help = "`matdiff serve [--port N] [--open]` serves a web page for derivations (see `matdiff serve --help`)."
)]
struct Cli {
    /// Scripts to run, in order.
    files: Vec<std::path::PathBuf>,
    /// Run this script text.
    #[arg(short = 'e', long = "eval", value_name = "SCRIPT")]
    eval: Option<String>,
    /// Output notation.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Print each derivation step by step.
    #[arg(long)]
    steps: bool,
    /// Check every derivative against finite differences at random values.
    #[arg(long)]
    check: bool,
    /// Layout of Jacobians `∂y/∂xᵀ`.
    #[arg(long, value_enum, default_value = "denominator")]
    layout: LayoutArg,
    /// Order in which `vec` stacks entries.
    #[arg(long = "vec", value_enum, default_value = "row")]
    vec_order: VecArg,
}

fn main() -> ExitCode {
    // `matdiff serve` has options of its own (a script named `serve` runs as `./serve`).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "serve") {
        return ExitCode::from(serve::main(args));
    }
    let cli = Cli::parse();
    // Recursion on user input is bounded by the parser's limits; a large stack
    // keeps those bounds far from the operating system's.
    let worker = std::thread::Builder::new().stack_size(512 << 20).spawn(move || run(cli));
    match worker.map(|h| h.join()) {
        Ok(Ok(code)) => ExitCode::from(code),
        _ => {
            eprintln!("error: internal failure");
            ExitCode::from(1)
        }
    }
}

fn options(cli: &Cli) -> Options {
    Options {
        format: match cli.format {
            FormatArg::Text => Format::Text,
            FormatArg::Ascii => Format::Ascii,
            FormatArg::Latex => Format::Latex,
            FormatArg::Json => Format::Json,
            FormatArg::Numpy => Format::Numpy,
            FormatArg::Jax => Format::Jax,
            FormatArg::Torch => Format::Torch,
        },
        steps: cli.steps,
        limits: Default::default(),
        conventions: Conventions {
            layout: match cli.layout {
                LayoutArg::Denominator => Layout::Denominator,
                LayoutArg::Numerator => Layout::Numerator,
            },
            order: match cli.vec_order {
                VecArg::Row => VecOrder::Row,
                VecArg::Col => VecOrder::Col,
            },
        },
    }
}

/// Runs one script; returns false after printing its first error.
///
/// Answers go to `out` in the session's format. With `check`, each
/// derivative is compared with finite differences: in JSON the result is a
/// field of the answer's object; in the code formats (NumPy, JAX, PyTorch)
/// it is reported on stderr, so that stdout stays a Python module;
/// otherwise a line follows the answer. Code is printed per answer when
/// `code_each` is set (the REPL); otherwise the caller prints one module at
/// the end.
pub(crate) fn run_script(
    session: &mut Session,
    name: &str,
    src: &str,
    check: bool,
    code_each: bool,
    items: &mut Vec<Item>,
    out: &mut impl Write,
) -> bool {
    let stmts = match session.prepare(src) {
        Ok(s) => s,
        Err(e) => {
            eprint!("{}", e.render(name, src));
            return false;
        }
    };
    let mut shown = Shown::new();
    for s in &stmts {
        let o = match session.exec(s, src) {
            Ok(o) => o,
            Err(e) => {
                let _ = out.flush();
                eprint!("{}", e.render(name, src));
                return false;
            }
        };
        let (item, answers): (Item, Vec<&Answer>) = match &o {
            Outcome::Answer(a) => (Item::Answer(a.clone()), vec![a]),
            Outcome::Backward(b) => (Item::Backward(b.clone()), b.gradients.iter().collect()),
            _ => {
                if let Some(text) = session.render_outcome(&o) {
                    let _ = writeln!(out, "{text}");
                }
                continue;
            }
        };
        let (line, col) = session_line_col(&o, src);
        let mut checks = Vec::new();
        for a in &answers {
            checks.push(if check {
                match session.check(a) {
                    Ok(c) => c.map(CheckResult::new),
                    Err(e) => {
                        let _ = out.flush();
                        eprintln!("error at {name}:{line}:{col}: cannot check this answer numerically: {}", e.0);
                        return false;
                    }
                }
            } else {
                None
            });
        }
        match (session.options.format, session.options.format.backend()) {
            (_, Some(backend)) => match session.code_of(backend, std::slice::from_ref(&item)) {
                Ok(module) => {
                    if code_each {
                        let _ = writeln!(out, "{module}");
                    }
                    for c in checks.iter().flatten().filter(|c| c.passed) {
                        eprintln!("{name}:{line}:{col}: checked, largest relative error {:.1e}", c.relative_error);
                    }
                }
                Err(e) => {
                    let _ = out.flush();
                    eprint!("{}", e.render(name, src));
                    return false;
                }
            },
            (Format::Json, _) => {
                let text = match &o {
                    Outcome::Backward(b) => session.renderer().backward(b, &checks, &mut shown),
                    _ => session.render_after(answers[0], checks[0], &mut shown),
                };
                let _ = writeln!(out, "{text}");
            }
            _ => {
                for (a, c) in answers.iter().zip(&checks) {
                    let _ = writeln!(out, "{}", session.render_after(a, None, &mut shown));
                    if let Some(c) = c {
                        let what = if c.passed { "checked" } else { "CHECK FAILED" };
                        let _ = writeln!(out, "  {what}: largest relative error {:.1e}", c.relative_error);
                    }
                }
            }
        }
        items.push(item);
        if let Some(c) = checks.iter().flatten().find(|c| !c.passed) {
            let _ = out.flush();
            eprintln!(
                "error at {name}:{line}:{col}: the answer disagrees with finite differences (relative error {:.1e} > {TOLERANCE:.0e})",
                c.relative_error
            );
            return false;
        }
    }
    true
}

/// Where an answer's query is in the source.
fn session_line_col(o: &Outcome, src: &str) -> (usize, usize) {
    match o {
        Outcome::Answer(a) => a.span.line_col(src),
        Outcome::Backward(b) => b.span.line_col(src),
        _ => (0, 0),
    }
}

fn run(cli: Cli) -> u8 {
    let mut session = Session::new(options(&cli));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut scripts: Vec<(String, String)> = Vec::new();
    for path in &cli.files {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => {
                match String::from_utf8(bytes) {
                    Ok(s) => scripts.push((name, s)),
                    Err(e) => {
                        let at = e.utf8_error().valid_up_to();
                        eprintln!("error: {name} is not valid UTF-8 (first bad byte at offset {at}); matdiff reads UTF-8 text");
                        return 1;
                    }
                }
            }
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                return 1;
            }
        }
    }
    if let Some(src) = &cli.eval {
        scripts.push(("<-e>".to_string(), src.clone()));
    }
    if scripts.is_empty() {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            let mut check = cli.check;
            return repl::run(&mut session, &mut check);
        }
        let mut src = String::new();
        if let Err(e) = stdin.lock().read_to_string(&mut src) {
            eprintln!("error: cannot read standard input: {e}");
            return 1;
        }
        scripts.push(("<stdin>".to_string(), src));
    }
    let mut items = Vec::new();
    for (name, src) in &scripts {
        if !run_script(&mut session, name, src, cli.check, false, &mut items, &mut out) {
            return 1;
        }
    }
    if let Some(backend) = session.options.format.backend() {
        match session.code_of(backend, &items) {
            Ok(module) => {
                let _ = write!(out, "{module}");
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    0
}
