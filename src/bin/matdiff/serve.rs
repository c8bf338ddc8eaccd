//! `matdiff serve`: a web page for derivations on this machine, and the JSON
//! API behind it.
//!
//! The page (`web/`), KaTeX with its fonts (`web/vendor/katex/`) and the
//! example scripts are compiled into the binary: the server reads no file and
//! the page fetches nothing from elsewhere (its content security policy
//! forbids it).
//!
//! `POST /derive` runs a script. A page left open posts as its user types, so
//! every request is bounded, and the server cannot hang or grow without bound:
//! - its body is at most [`MAX_BODY`] bytes (413 otherwise);
//! - it waits for one of a fixed number of workers in a queue of fixed length
//!   (503 when the queue is full, or when it waited longer than the time limit);
//! - the derivation runs in a child process, this binary as `serve --worker`,
//!   under an address-space limit, and is killed when its time is up. A thread
//!   cannot be stopped from outside; a process can, and its memory is returned
//!   whole when it ends. Starting a process costs a few milliseconds, which a
//!   page that waits for its user to stop typing does not notice;
//! - what it prints is read up to [`MAX_OUTPUT`] bytes.

use clap::Parser;
use matdiff::conventions::Conventions;
use matdiff::diff::chain::Layout;
use matdiff::error::Span;
use matdiff::ir::VecOrder;
use matdiff::render::Shown;
use matdiff::session::{CheckResult, Format, Options, Outcome, Session};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Request, Response, Server};

/// Largest request body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest answer a derivation may print, in bytes.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// The stack of the thread that derives, part of its memory limit: deep
/// enough for the parser's nesting limits with room to spare.
const STACK: usize = 256 << 20;

/// Serves a web page for derivations on this machine (127.0.0.1 only).
#[derive(Debug, Parser)]
#[command(name = "matdiff serve", version)]
struct ServeCli {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8421)]
    port: u16,
    /// Open the page in the default browser.
    #[arg(long)]
    open: bool,
    /// Derivations run at once (default: the number of cores, at most 4).
    #[arg(long)]
    workers: Option<usize>,
    /// Requests that may wait for a worker; more are refused.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Seconds a derivation may take before it is stopped.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Mebibytes of memory (address space, its stack included) a derivation may use.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(512..))]
    memory: u64,
    /// Derive one request from standard input (the server's child processes).
    #[arg(long, hide = true)]
    worker: bool,
}

/// Runs `matdiff serve ARGS`; `args` starts with the program's name.
pub fn main(args: Vec<OsString>) -> u8 {
    let mut args = args;
    args.remove(0);
    args[0] = "matdiff serve".into();
    let cli = ServeCli::parse_from(args);
    if cli.worker {
        return worker(&cli);
    }
    serve(&cli)
}

// ---------------------------------------------------------------------------
// What the page is made of.

macro_rules! web {
    ($path:literal, $kind:literal) => {
        ($path, $kind, include_bytes!(concat!("../../../web", $path)) as &[u8])
    };
}

macro_rules! font {
    ($name:literal) => {
        (
            concat!("/vendor/katex/fonts/", $name),
            "font/woff2",
            include_bytes!(concat!("../../../web/vendor/katex/fonts/", $name)) as &[u8],
        )
    };
}

/// Every file the server sends: path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    web!("/index.html", "text/html; charset=utf-8"),
    web!("/app.js", "text/javascript; charset=utf-8"),
    web!("/style.css", "text/css; charset=utf-8"),
    web!("/vendor/katex/katex.min.js", "text/javascript; charset=utf-8"),
    web!("/vendor/katex/katex.min.css", "text/css; charset=utf-8"),
    web!("/vendor/katex/LICENSE", "text/plain; charset=utf-8"),
    font!("KaTeX_AMS-Regular.woff2"),
    font!("KaTeX_Caligraphic-Bold.woff2"),
    font!("KaTeX_Caligraphic-Regular.woff2"),
    font!("KaTeX_Fraktur-Bold.woff2"),
    font!("KaTeX_Fraktur-Regular.woff2"),
    font!("KaTeX_Main-Bold.woff2"),
    font!("KaTeX_Main-BoldItalic.woff2"),
    font!("KaTeX_Main-Italic.woff2"),
    font!("KaTeX_Main-Regular.woff2"),
    font!("KaTeX_Math-BoldItalic.woff2"),
    font!("KaTeX_Math-Italic.woff2"),
    font!("KaTeX_SansSerif-Bold.woff2"),
    font!("KaTeX_SansSerif-Italic.woff2"),
    font!("KaTeX_SansSerif-Regular.woff2"),
    font!("KaTeX_Script-Regular.woff2"),
    font!("KaTeX_Size1-Regular.woff2"),
    font!("KaTeX_Size2-Regular.woff2"),
    font!("KaTeX_Size3-Regular.woff2"),
    font!("KaTeX_Size4-Regular.woff2"),
    font!("KaTeX_Typewriter-Regular.woff2"),
];

macro_rules! example {
    ($name:literal) => {
        ($name, include_str!(concat!("../../../examples/", $name, ".mdiff")))
    };
}

/// The examples menu: every `examples/*.mdiff`, by name (a test checks
/// that none is missing).
const EXAMPLES: &[(&str, &str)] = &[
    example!("attention"),
    example!("backprop"),
    example!("gradient_penalty"),
    example!("hessian_vector"),
    example!("layer_norm"),
    example!("least_squares"),
    example!("logistic"),
    example!("lstm"),
    example!("maml"),
    example!("mlp"),
    example!("newton_logistic"),
    example!("softmax_regression"),
    example!("third_differential"),
    example!("three_layer"),
    example!("transformer_block"),
];

/// The page may load only what this server sends. KaTeX sets inline styles.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'";

// ---------------------------------------------------------------------------
// The server.

/// How much one request may take.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    memory: u64,
}

/// A `POST /derive` waiting for a worker.
struct Job {
    request: Request,
    arrived: Instant,
}

fn serve(cli: &ServeCli) -> u8 {
    let server = match Server::http(("127.0.0.1", cli.port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", cli.port);
            return 1;
        }
    };
    let port = server.server_addr().to_ip().map_or(cli.port, |a| a.port());
    let url = format!("http://127.0.0.1:{port}/");
    let timeout = Duration::try_from_secs_f64(cli.timeout.clamp(0.1, 3600.0)).unwrap_or(Duration::from_secs(10));
    let limits = Limits { timeout, memory: cli.memory };
    let workers = cli.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4)));
    println!(
        "matdiff serve: {url} ({} workers, queue {}, {:.0?} and {} MiB per derivation; Ctrl-C stops)",
        workers.max(1),
        cli.queue,
        limits.timeout,
        limits.memory
    );
    let _ = std::io::stdout().flush();
    if cli.open {
        open_browser(&url);
    }
    let (tx, rx) = mpsc::sync_channel::<Job>(cli.queue);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..workers.max(1) {
        let rx = Arc::clone(&rx);
        std::thread::spawn(move || loop {
            let job = match rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            match job {
                Ok(job) => derive_request(job, limits),
                Err(_) => return,
            }
        });
    }
    for request in server.incoming_requests() {
        route(request, &tx);
    }
    0
}

fn route(request: Request, queue: &mpsc::SyncSender<Job>) {
    let path = request.url().split(['?', '#']).next().unwrap_or("/").to_string();
    match (request.method(), path.as_str()) {
        (Method::Post, "/derive") => {
            if request.body_length().is_some_and(|n| n > MAX_BODY) {
                return refuse(request, 413, &format!("the script is larger than {} KiB", MAX_BODY / 1024));
            }
            match queue.try_send(Job { request, arrived: Instant::now() }) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) => {
                    refuse(job.request, 503, "the server is busy; try again in a moment")
                }
            }
        }
        (Method::Get | Method::Head, "/examples.json") => {
            let examples: Vec<Value> = EXAMPLES.iter().map(|(n, s)| json!({"name": n, "script": s})).collect();
            let body = Value::Array(examples).to_string().into_bytes();
            respond(request, 200, "application/json; charset=utf-8", body);
        }
        (Method::Get | Method::Head, _) => {
            let path = if path == "/" { "/index.html" } else { path.as_str() };
            match ASSETS.iter().find(|(p, _, _)| *p == path) {
                Some((_, kind, bytes)) => respond(request, 200, kind, bytes.to_vec()),
                None => refuse(request, 404, "no such page"),
            }
        }
        _ => refuse(request, 405, "only GET, and POST /derive"),
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn respond(request: Request, status: u16, kind: &str, body: Vec<u8>) {
    let response = Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", kind))
        .with_header(header("Content-Security-Policy", CSP))
        .with_header(header("X-Content-Type-Options", "nosniff"));
    // A client that left does not need its answer.
    let _ = request.respond(response);
}

/// Refuses a request: `{"refused": message}` with the status.
fn refuse(request: Request, status: u16, message: &str) {
    respond(request, status, "application/json; charset=utf-8", json!({ "refused": message }).to_string().into_bytes());
}

fn json_response(request: Request, value: &Value) {
    respond(request, 200, "application/json; charset=utf-8", value.to_string().into_bytes());
}

/// Runs one `POST /derive` on a worker thread.
fn derive_request(job: Job, limits: Limits) {
    let Job { request, arrived } = job;
    let deadline = arrived + limits.timeout;
    if Instant::now() >= deadline {
        return refuse(request, 503, "the server is busy; try again in a moment");
    }
    // The body is read on a thread of its own, so that a client that stops
    // sending holds that thread, not a worker.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut request = request;
        let mut body = Vec::new();
        let read = request.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body);
        let _ = tx.send((request, body, read.is_ok()));
    });
    let Ok((request, body, read)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
        return;
    };
    if !read {
        return refuse(request, 400, "the request body could not be read");
    }
    if body.len() > MAX_BODY {
        return refuse(request, 413, &format!("the script is larger than {} KiB", MAX_BODY / 1024));
    }
    if let Err(e) = DeriveRequest::parse(&body) {
        return refuse(request, 400, &e);
    }
    let started = Instant::now();
    let value = match run_worker(&body, limits, started + limits.timeout) {
        Ok(out) => match serde_json::from_slice::<Value>(&out) {
            Ok(v) => v,
            Err(_) => limit_error("the derivation stopped without an answer"),
        },
        Err(e) => limit_error(&e),
    };
    // Written on a thread of its own too: a client that does not read its
    // answer holds that thread, not a worker.
    std::thread::spawn(move || json_response(request, &value));
}

/// The answer to a derivation that ran out of time or memory.
fn limit_error(message: &str) -> Value {
    json!({ "items": [], "error": { "kind": "limit", "message": message } })
}

/// Derives in a child process; its output, or why there is none.
fn run_worker(body: &[u8], limits: Limits, deadline: Instant) -> Result<Vec<u8>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot start a derivation: {e}"))?;
    let seconds = limits.timeout.as_secs_f64();
    let mut child = Command::new(exe)
        .args(["serve", "--worker", "--memory", &limits.memory.to_string(), "--timeout", &seconds.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start a derivation: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_OUTPUT as u64 + 1).read_to_end(&mut out);
        // Whatever is left is read and dropped, so the child never waits on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        out
    });
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body);
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    let seconds = format!("{seconds:.3}");
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    match status {
        None => Err(format!("the derivation took longer than {seconds} s and was stopped")),
        Some(s) if s.success() && out.len() <= MAX_OUTPUT => Ok(out),
        Some(s) if s.success() => Err(format!("the answer is larger than {} MiB", MAX_OUTPUT >> 20)),
        Some(s) => Err(failure(s, limits, seconds)),
    }
}

/// Why a child process ended without an answer.
fn failure(status: ExitStatus, limits: Limits, seconds: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGXCPU | libc::SIGKILL) => format!("the derivation took longer than {seconds} s and was stopped"),
        // An allocation that fails aborts.
        Some(libc::SIGABRT | libc::SIGSEGV) => {
            format!("the derivation needed more than {} MiB of memory and was stopped", limits.memory)
        }
        _ => format!("the derivation failed ({status})"),
    }
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let started =
        Command::new(opener).arg(url).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    if started.is_err() {
        eprintln!("cannot open a browser ({opener}); open {url} yourself");
    }
}

// ---------------------------------------------------------------------------
// The child process: one derivation.

/// A `POST /derive` body.
#[derive(Debug)]
struct DeriveRequest {
    script: String,
    conventions: Conventions,
    steps: bool,
    check: bool,
    code: bool,
}

impl DeriveRequest {
    /// `{"script", "layout"?, "vec"?, "steps"?, "check"?, "code"?}`; the
    /// flags default to true, the conventions to the command line's.
    fn parse(body: &[u8]) -> Result<DeriveRequest, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("the request is not JSON: {e}"))?;
        let script = v["script"].as_str().ok_or("the request has no \"script\" string")?.to_string();
        let layout = match v["layout"].as_str() {
            None | Some("denominator") => Layout::Denominator,
            Some("numerator") => Layout::Numerator,
            Some(other) => return Err(format!("layout `{other}` is none of: denominator, numerator")),
        };
        let order = match v["vec"].as_str() {
            None | Some("row") => VecOrder::Row,
            Some("col") => VecOrder::Col,
            Some(other) => return Err(format!("vec `{other}` is none of: row, col")),
        };
        let flag = |name: &str| v[name].as_bool().unwrap_or(true);
        Ok(DeriveRequest {
            script,
            conventions: Conventions { layout, order },
            steps: flag("steps"),
            check: flag("check"),
            code: flag("code"),
        })
    }
}

fn worker(cli: &ServeCli) -> u8 {
    limit_resources(cli.memory, cli.timeout);
    let mut body = Vec::new();
    if std::io::stdin().take(MAX_BODY as u64 + 1).read_to_end(&mut body).is_err() {
        return 1;
    }
    let request = match DeriveRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let Ok(thread) = std::thread::Builder::new().stack_size(STACK).spawn(move || derive(&request)) else {
        return 1;
    };
    match thread.join() {
        Ok(value) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{value}");
            let _ = out.flush();
            0
        }
        Err(_) => 1,
    }
}

/// Bounds this process: its address space, and its processor time (in case
/// its parent is gone and cannot stop it).
fn limit_resources(memory_mib: u64, timeout: f64) {
    let set = |resource, value: u64| {
        let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
        // SAFETY: setrlimit reads the struct it is given and changes only
        // this process's limits.
        unsafe { libc::setrlimit(resource, &limit) };
    };
    set(libc::RLIMIT_AS, memory_mib << 20);
    set(libc::RLIMIT_CPU, timeout.ceil() as u64 + 1);
}

/// Runs a script: every statement's outcome in order, as `--format json`
/// prints it, each answer with its location (`line`, `column`) and, when
/// asked, `code` per backend; then the error, if a statement failed.
fn derive(request: &DeriveRequest) -> Value {
    let options = Options {
        format: Format::Json,
        steps: request.steps,
        conventions: request.conventions,
        limits: Default::default(),
    };
    let mut session = Session::new(options);
    let src = request.script.as_str();
    let mut items = Vec::new();
    let stmts = match session.prepare(src) {
        Ok(s) => s,
        Err(e) => return json!({ "items": items, "error": error_json(&e, src) }),
    };
    let mut shown = Shown::new();
    for s in &stmts {
        let o = match session.exec(s, src) {
            Ok(o) => o,
            Err(e) => return json!({ "items": items, "error": error_json(&e, src) }),
        };
        let (item, answers, span) = match &o {
            Outcome::Answer(a) => (matdiff::codegen::Item::Answer(a.clone()), vec![a], a.span),
            Outcome::Backward(b) => (matdiff::codegen::Item::Backward(b.clone()), b.gradients.iter().collect(), b.span),
            _ => {
                if let Some(text) = session.render_outcome(&o) {
                    items.push(serde_json::from_str::<Value>(&text).unwrap_or(Value::Null));
                }
                continue;
            }
        };
        let mut checks = Vec::new();
        let mut check_errors = Vec::new();
        for a in &answers {
            let (c, e) = match request.check.then(|| session.check(a)) {
                Some(Ok(c)) => (c.map(CheckResult::new), None),
                Some(Err(e)) => (None, Some(e.0)),
                None => (None, None),
            };
            checks.push(c);
            check_errors.push(e);
        }
        let text = match &o {
            Outcome::Backward(b) => session.renderer().backward(b, &checks, &mut shown),
            _ => session.render_after(answers[0], checks[0], &mut shown),
        };
        let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        for (i, e) in check_errors.into_iter().enumerate() {
            let Some(e) = e else { continue };
            match &o {
                Outcome::Backward(_) => v["gradients"][i]["check_error"] = json!(e),
                _ => v["check_error"] = json!(e),
            }
        }
        let (line, column) = span.line_col(src);
        v["line"] = json!(line);
        v["column"] = json!(column);
        if request.code {
            let mut code = serde_json::Map::new();
            for (name, format) in [("numpy", Format::Numpy), ("jax", Format::Jax), ("torch", Format::Torch)] {
                let backend = format.backend().expect("a code format");
                let module = session.code_of(backend, std::slice::from_ref(&item));
                code.insert(name.into(), module.map_or_else(|e| json!({ "error": e.to_string() }), |m| json!(m)));
            }
            v["code"] = Value::Object(code);
        }
        items.push(v);
    }
    json!({ "items": items, "error": null })
}

/// An error in a script: what, where (1-based line and column of its first
/// and one past its last character), and the text it points at.
fn error_json(e: &matdiff::Error, src: &str) -> Value {
    use miette::Diagnostic;
    let span = e.span();
    let (line, column) = span.line_col(src);
    let (end_line, end_column) = Span::new(span.end, span.end).line_col(src);
    let label = e.labels().and_then(|mut l| l.next()).and_then(|l| l.label().map(String::from));
    json!({
        "kind": e.code().map(|c| c.to_string()),
        "message": e.to_string(),
        "line": line,
        "column": column,
        "end_line": end_line,
        "end_column": end_column,
        "text": src.get(span.start..span.end).unwrap_or(""),
        "label": label,
        "help": e.help().map(|h| h.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &str, ext: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("the folder exists")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(ext).map(String::from))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_examples_menu_lists_every_example_script() {
        let menu: Vec<&str> = EXAMPLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(menu, listing("examples", ".mdiff"), "add the new example to EXAMPLES in serve.rs");
    }

    #[test]
    fn every_katex_font_is_served() {
        for font in listing("web/vendor/katex/fonts", ".woff2") {
            let path = format!("/vendor/katex/fonts/{font}.woff2");
            assert!(ASSETS.iter().any(|(p, _, _)| *p == path), "{path} is not in ASSETS");
        }
        let css = std::str::from_utf8(ASSETS.iter().find(|a| a.0 == "/vendor/katex/katex.min.css").unwrap().2).unwrap();
        for url in css.split("url(fonts/").skip(1).filter_map(|s| s.split(')').next()).filter(|u| u.ends_with(".woff2"))
        {
            assert!(ASSETS.iter().any(|(p, _, _)| p.ends_with(url)), "the stylesheet asks for {url}");
        }
    }

    #[test]
    fn requests_name_their_bad_settings() {
        let e = DeriveRequest::parse(br#"{"script": "x: n", "layout": "sideways"}"#).unwrap_err();
        assert_eq!(e, "layout `sideways` is none of: denominator, numerator");
        assert!(DeriveRequest::parse(b"{}").unwrap_err().contains("\"script\""));
        let r = DeriveRequest::parse(br#"{"script": "x: n", "vec": "col", "check": false}"#).unwrap();
        assert!(r.steps && !r.check && r.conventions.order == VecOrder::Col);
    }

    #[test]
    fn a_script_error_is_located() {
        let r = DeriveRequest::parse(br#"{"script": "x: n\ny = x (", "code": false}"#).unwrap();
        let v = derive(&r);
        let e = &v["error"];
        assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(2), Some(7)), "{v}");
        assert_eq!(e["text"], "(");
        assert!(e["message"].as_str().unwrap().starts_with("syntax error"));
    }
}
