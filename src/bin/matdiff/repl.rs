//! The interactive prompt: line editing, history, and `:` commands. The
//! statements themselves run in the library's [`Session`].

use matdiff::diff::chain::Layout;
use matdiff::ir::VecOrder;
use matdiff::session::{Format, Session};
use matdiff::typeck::Binding;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
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
  :load FILE          run a script (Tab completes file names)
  :reset              forget every declaration and definition
  :quit               leave (also Ctrl-D)

While a bracket is open, lines continue the input (prompt `...>`): Ctrl-C or
a command cancels the unfinished input; Ctrl-D or :quit leaves without
running it.";

fn history_path() -> Option<std::path::PathBuf> {
    let dir = dirs::data_dir()?.join("matdiff");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

const COMMANDS: &[&str] =
    &[":help", ":steps", ":format", ":layout", ":vec", ":check", ":env", ":load", ":reset", ":quit"];

/// Completes declared names, functions, `:` commands, and the file names
/// after `:load`.
struct Completion {
    names: Rc<RefCell<Vec<String>>>,
    files: FilenameCompleter,
}

impl Completer for Completion {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, cx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        if line[..pos].trim_start().strip_prefix(":load").is_some_and(|rest| rest.starts_with(char::is_whitespace)) {
            return self.files.complete(line, pos, cx);
        }
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
    rl.set_helper(Some(Completion { names: names.clone(), files: FilenameCompleter::new() }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!("matdiff {} — :help for help, :quit to leave", env!("CARGO_PKG_VERSION"));
    let mut repl = Repl { check: *check, loaded: Vec::new() };
    let mut pending = String::new();
    loop {
        *names.borrow_mut() = session.env.names.keys().cloned().collect();
        let prompt = if pending.is_empty() { "matdiff> " } else { "   ...> " };
        match rl.readline(prompt) {
            Ok(line) => {
                // A command ends an unfinished input: no statement starts with `:`.
                if !pending.is_empty() && line.trim_start().starts_with(':') {
                    let _ = rl.add_history_entry(line.as_str());
                    if is_quit(&line) {
                        println!("leaving; the unfinished input was not run");
                        break;
                    }
                    println!("(the unfinished input was cancelled)");
                    pending.clear();
                }
                pending.push_str(&line);
                if open_brackets(&pending) > 0 {
                    pending.push(' ');
                    continue;
                }
                let input = std::mem::take(&mut pending);
                let _ = rl.add_history_entry(input.as_str());
                if let Some(cmd) = input.trim().strip_prefix(':') {
                    if !repl.command(session, cmd) {
                        break;
                    }
                    continue;
                }
                run_text(session, repl.check, "<input>", &input);
            }
            Err(ReadlineError::Interrupted) => {
                if !pending.is_empty() {
                    println!("(input cancelled)");
                    pending.clear();
                }
            }
            Err(ReadlineError::Eof) if !pending.is_empty() => {
                println!("leaving; the unfinished input was not run");
                break;
            }
            Err(_) => break,
        }
    }
    *check = repl.check;
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

fn is_quit(line: &str) -> bool {
    matches!(line.trim().trim_start_matches(':').split_whitespace().next(), Some("q" | "quit" | "exit"))
}

const FORMATS: &[(&str, Format)] = &[
    ("text", Format::Text),
    ("ascii", Format::Ascii),
    ("latex", Format::Latex),
    ("json", Format::Json),
    ("numpy", Format::Numpy),
    ("jax", Format::Jax),
    ("torch", Format::Torch),
];

/// What the prompt keeps beside the session.
struct Repl {
    /// Whether answers are checked.
    check: bool,
    /// Files loaded since the last `:reset`.
    loaded: Vec<std::path::PathBuf>,
}

/// `on` or `off`, else a message listing them.
fn on_off(name: &str, arg: &str) -> Option<bool> {
    match arg {
        "on" => Some(true),
        "off" => Some(false),
        "" => {
            println!(":{name} takes on or off");
            None
        }
        _ => {
            println!("`{arg}` is not a value of :{name}; it takes on or off");
            None
        }
    }
}

/// One of `choices`, else a message listing them.
fn choice<T: Copy>(name: &str, arg: &str, choices: &[(&str, T)]) -> Option<T> {
    if let Some((_, v)) = choices.iter().find(|(n, _)| *n == arg) {
        return Some(*v);
    }
    let all: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    if arg.is_empty() {
        println!(":{name} takes one of: {}", all.join(", "));
    } else {
        println!("`{arg}` is not a value of :{name}; it takes one of: {}", all.join(", "));
    }
    None
}

impl Repl {
    /// Runs a `:` command; false to leave.
    fn command(&mut self, session: &mut Session, cmd: &str) -> bool {
        let mut words = cmd.split_whitespace();
        let head = words.next().unwrap_or("");
        let arg = words.next().unwrap_or("");
        match head {
            "q" | "quit" | "exit" => return false,
            "help" | "h" => println!("{HELP}"),
            "steps" => {
                if let Some(on) = on_off(head, arg) {
                    session.options.steps = on;
                    println!("steps: {arg} (derivations {})", if on { "step by step" } else { "answer only" });
                }
            }
            "check" => {
                if let Some(on) = on_off(head, arg) {
                    self.check = on;
                    let what = if on {
                        "every derivative is compared with finite differences"
                    } else {
                        "answers are not checked"
                    };
                    println!("check: {arg} ({what})");
                }
            }
            "format" => {
                if let Some(f) = choice(head, arg, FORMATS) {
                    session.options.format = f;
                    println!("format: {arg}");
                }
            }
            "layout" => {
                let layouts = [("denominator", Layout::Denominator), ("numerator", Layout::Numerator)];
                if let Some(l) = choice(head, arg, &layouts) {
                    session.options.conventions.layout = l;
                    let rows =
                        if l == Layout::Denominator { "one row per entry of x" } else { "one row per entry of y" };
                    println!("layout: {arg} (∂y/∂xᵀ has {rows})");
                }
            }
            "vec" => {
                if let Some(o) = choice(head, arg, &[("row", VecOrder::Row), ("col", VecOrder::Col)]) {
                    session.set_vec_order(o);
                    println!("vec: {arg} (vec stacks {})", if o == VecOrder::Row { "rows" } else { "columns" });
                }
            }
            "env" => {
                if session.env.names.is_empty() {
                    println!("nothing is declared or defined");
                }
                for (name, (b, _)) in &session.env.names {
                    match b {
                        Binding::Matrix { shape, symmetric } => {
                            println!("{name}: {shape}{}", if *symmetric { " symmetric" } else { "" })
                        }
                        Binding::Def { body, .. } => {
                            println!("{name} = {}  : {}", matdiff::print::text(body), body.shape)
                        }
                        Binding::Func => println!("{name}: R → R"),
                    }
                }
            }
            "reset" => {
                *session = Session::new(session.options);
                self.loaded.clear();
                println!("every declaration and definition is forgotten; the settings stay");
            }
            "load" if arg.is_empty() => println!(":load takes a file name, as in `:load examples/backprop.mdiff`"),
            "load" => self.load(session, arg),
            _ => {
                let all: Vec<&str> = COMMANDS.to_vec();
                println!("unknown command `:{head}`; the commands are {}", all.join(" "));
            }
        }
        true
    }

    /// Runs a file; when it was loaded before and fails, says how to start over.
    fn load(&mut self, session: &mut Session, file: &str) {
        let src = match std::fs::read_to_string(file) {
            Ok(src) => src,
            Err(e) => {
                eprintln!("error: cannot read {file}: {e}");
                return;
            }
        };
        let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.into());
        let again = self.loaded.contains(&path);
        if !run_text(session, self.check, file, &src) && again {
            println!("{file} was loaded before, so its names exist already; :reset forgets them, then :load it again");
        }
        if !again {
            self.loaded.push(path);
        }
    }
}
