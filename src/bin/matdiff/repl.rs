//! The interactive prompt: line editing, history, and `:` commands. The
//! statements themselves run in the library's [`Session`].

use matdiff::diff::chain::Layout;
use matdiff::ir::VecOrder;
use matdiff::session::{Format, Session};
use matdiff::typeck::Binding;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::cell::RefCell;
use std::rc::Rc;

const HELP: &str = "\
Type declarations, definitions and queries, one per line (or separated by ;).

  W: 2 x 3            A, B: n x n         x: n        f: R -> R
  d1 = x^T A x        d(d1)               ∂d1/∂x      grad(d1, A)
  ∂y/∂xᵀ              ∂L/∂vec(W)ᵀ         jacobian(y, x)
  simplify(A I + 0)   shape(A ⊗ W)        A x

Commands:
  :help               this text
  :steps on|off       show derivations step by step
  :format text|ascii|latex|json|numpy|jax|torch
  :layout denominator|numerator
  :vec row|col
  :check on|off       check every derivative against finite differences
  :env                what is declared and defined, with shapes
  :load FILE          run a script
  :reset              forget every declaration and definition
  :quit               leave (also Ctrl-D)";

fn history_path() -> Option<std::path::PathBuf> {
    let dir = dirs::data_dir()?.join("matdiff");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

const COMMANDS: &[&str] =
    &[":help", ":steps", ":format", ":layout", ":vec", ":check", ":env", ":load", ":reset", ":quit"];

/// Completes declared names, functions and `:` commands.
struct Completion {
    names: Rc<RefCell<Vec<String>>>,
}

impl Completer for Completion {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos].rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, vec![]));
        }
        let pool: Vec<String> = if word.starts_with(':') {
            COMMANDS.iter().map(|c| c.to_string()).collect()
        } else {
            let language = matdiff::typeck::language_names().map(String::from);
            self.names.borrow().iter().cloned().chain(language).collect()
        };
        let mut found: Vec<Pair> = pool
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair { display: c.clone(), replacement: c })
            .collect();
        found.sort_by(|a, b| a.display.cmp(&b.display));
        found.dedup_by(|a, b| a.display == b.display);
        Ok((start, found))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

/// Runs the prompt until `:quit` or end of input.
pub fn run(session: &mut Session, check: &mut bool) -> u8 {
    let names = Rc::new(RefCell::new(Vec::new()));
    let Ok(mut rl) = Editor::<Completion, rustyline::history::DefaultHistory>::new() else {
        eprintln!("error: cannot start the line editor");
        return 1;
    };
    rl.set_helper(Some(Completion { names: names.clone() }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!("matdiff {} — :help for help, :quit to leave", env!("CARGO_PKG_VERSION"));
    let mut pending = String::new();
    loop {
        *names.borrow_mut() = session.env.names.keys().cloned().collect();
        let prompt = if pending.is_empty() { "matdiff> " } else { "   ...> " };
        match rl.readline(prompt) {
            Ok(line) => {
                pending.push_str(&line);
                if open_brackets(&pending) > 0 {
                    pending.push(' ');
                    continue;
                }
                let input = std::mem::take(&mut pending);
                let _ = rl.add_history_entry(input.as_str());
                if let Some(cmd) = input.trim().strip_prefix(':') {
                    if !command(session, check, cmd) {
                        break;
                    }
                    continue;
                }
                run_text(session, *check, "<input>", &input);
            }
            Err(ReadlineError::Interrupted) => pending.clear(),
            Err(_) => break,
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    0
}

fn open_brackets(s: &str) -> i64 {
    s.chars()
        .map(|c| match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        })
        .sum()
}

/// Runs text and prints answers or the error; the session keeps going.
pub fn run_text(session: &mut Session, check: bool, name: &str, src: &str) -> bool {
    let mut out = std::io::stdout();
    let mut items = Vec::new();
    super::run_script(session, name, src, check, true, &mut items, &mut out)
}

fn command(session: &mut Session, check: &mut bool, cmd: &str) -> bool {
    let mut words = cmd.split_whitespace();
    let head = words.next().unwrap_or("");
    let arg = words.next().unwrap_or("");
    let opts = &mut session.options;
    match (head, arg) {
        ("q" | "quit" | "exit", _) => return false,
        ("help" | "h", _) => println!("{HELP}"),
        ("steps", "on") => opts.steps = true,
        ("steps", "off") => opts.steps = false,
        ("check", "on") => *check = true,
        ("check", "off") => *check = false,
        ("format", "text") => opts.format = Format::Text,
        ("format", "ascii") => opts.format = Format::Ascii,
        ("format", "latex") => opts.format = Format::Latex,
        ("format", "json") => opts.format = Format::Json,
        ("format", "numpy") => opts.format = Format::Numpy,
        ("format", "jax") => opts.format = Format::Jax,
        ("format", "torch") => opts.format = Format::Torch,
        ("layout", "denominator") => opts.conventions.layout = Layout::Denominator,
        ("layout", "numerator") => opts.conventions.layout = Layout::Numerator,
        ("vec", "row") => session.set_vec_order(VecOrder::Row),
        ("vec", "col") => session.set_vec_order(VecOrder::Col),
        ("env", _) => {
            for (name, (b, _)) in &session.env.names {
                match b {
                    Binding::Matrix { shape, symmetric } => {
                        println!("{name}: {shape}{}", if *symmetric { " symmetric" } else { "" })
                    }
                    Binding::Def { body, .. } => println!("{name} = {}  : {}", matdiff::print::text(body), body.shape),
                    Binding::Func => println!("{name}: R → R"),
                }
            }
        }
        ("reset", _) => *session = Session::new(session.options),
        ("load", file) if !file.is_empty() => match std::fs::read_to_string(file) {
            Ok(src) => {
                run_text(session, *check, file, &src);
            }
            Err(e) => eprintln!("error: cannot read {file}: {e}"),
        },
        _ => eprintln!("unknown command `:{cmd}`; :help lists the commands"),
    }
    true
}
