//! `matdiff serve` over HTTP: the page and its assets, `POST /derive` with
//! answers, code, checks and located errors, and the limits on what one
//! request may take.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `matdiff serve` on a free port, stopped when dropped.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The page's address.
    pub url: String,
}

impl Server {
    /// Starts `matdiff serve --port 0 ARGS` and waits for its address.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_matdiff"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("matdiff serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("a first line");
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the address").to_string();
        let port = url.trim_end_matches('/').rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        Server { child, port, url }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `POST /derive` with a JSON body: the status and the parsed answer.
    pub fn derive(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, out) = request(self.port, "POST", "/derive", body.to_string().as_bytes()).expect("an answer");
        (status, serde_json::from_slice(&out).expect("JSON"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a connection of its own: the status and the body.
/// A body the server refuses before reading it whole may fail to send; the
/// answer is read all the same.
pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    let _ = s.write_all(body);
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::InvalidData)?;
    let status = std::str::from_utf8(&out[..end])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let chunked = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = &out[end + 4..];
    Ok((status, if chunked { dechunk(body).ok_or(std::io::ErrorKind::InvalidData)? } else { body.to_vec() }))
}

/// A chunked body's content.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line]).ok()?.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(line + 2..line + 2 + size)?);
        body = body.get(line + 4 + size..)?;
    }
}

/// The seed network.
pub const SEED: &str = include_str!("../examples/backprop.mdiff");

#[test]
fn serve_answers_the_seed_network_with_steps_checks_and_code() {
    let server = Server::start(&[]);
    let (status, v) = server.derive(&serde_json::json!({ "script": SEED }));
    assert_eq!(status, 200, "{v}");
    assert!(v["error"].is_null(), "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.iter().filter(|i| i["definition"].is_string()).count(), 5);
    let w1 = items.iter().find(|i| i["query"] == "∂L/∂W1").expect("∂L/∂W1 is answered");
    assert_eq!(w1["text"], "2 n0ᵀ (((n2 - y) ∘ f2'(d2)) W2ᵀ ∘ f1'(d1))");
    assert_eq!((w1["line"].as_u64(), w1["column"].as_u64()), (Some(22), Some(1)));
    assert_eq!(w1["check"]["passed"], true);
    assert!(w1["steps"].as_array().unwrap().last().unwrap()["line"].as_str().unwrap().contains("vec⁻¹"));
    for (backend, first) in [("numpy", "import numpy as np"), ("jax", "import jax"), ("torch", "import torch")] {
        let code = w1["code"][backend].as_str().unwrap_or_else(|| panic!("{backend} code: {w1}"));
        assert!(code.starts_with(first) && code.contains("def grad_L_W1("), "{code}");
    }
    // The conventions are the request's.
    let (_, v) =
        server.derive(&serde_json::json!({ "script": SEED, "layout": "numerator", "check": false, "code": false }));
    let n2 = v["items"].as_array().unwrap().iter().find(|i| i["query"] == "∂L/∂n2ᵀ").unwrap().clone();
    assert_eq!((n2["layout"].as_str(), n2["text"].as_str()), (Some("numerator"), Some("2(n2 - y)")), "{n2}");
    assert!(n2.get("check").is_none() && n2.get("code").is_none());
}

#[test]
fn serve_locates_errors_and_refuses_bad_requests() {
    let server = Server::start(&[]);
    let (status, v) = server.derive(&serde_json::json!({ "script": "x: n\nA: n x n\ny = A x\nz = A y\nw = x y" }));
    assert_eq!(status, 200);
    let e = &v["error"];
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64(), e["kind"].as_str()),
        (Some(5), Some(5), Some("matdiff::shape")),
        "{v}"
    );
    assert_eq!(e["text"], "x y");
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "what came before the error is answered");
    // Settings, JSON and size.
    let (status, v) = server.derive(&serde_json::json!({ "script": "x: n", "vec": "diagonal" }));
    assert_eq!((status, v["refused"].as_str()), (400, Some("vec `diagonal` is none of: row, col")));
    let (status, _) = request(server.port, "POST", "/derive", b"\xff\xfe{not json").unwrap();
    assert_eq!(status, 400);
    let big = serde_json::json!({ "script": "#".repeat(100_000) }).to_string();
    let (status, _) = request(server.port, "POST", "/derive", big.as_bytes()).unwrap();
    assert_eq!(status, 413);
    let (status, _) = request(server.port, "GET", "/nothing", b"").unwrap();
    assert_eq!(status, 404);
    let (status, _) = request(server.port, "DELETE", "/derive", b"").unwrap();
    assert_eq!(status, 405);
}

#[test]
fn serve_sends_the_page_its_assets_and_every_example() {
    let server = Server::start(&[]);
    let (status, page) = request(server.port, "GET", "/", b"").unwrap();
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    // Everything the page loads comes from this server.
    for asset in ["/vendor/katex/katex.min.js", "/vendor/katex/katex.min.css", "/app.js", "/style.css"] {
        assert!(page.contains(asset), "{asset}");
        assert_eq!(request(server.port, "GET", asset, b"").unwrap().0, 200, "{asset}");
    }
    assert!(!page.contains("https://") && !page.contains("http://"), "the page loads nothing from elsewhere");
    let (_, fonts) = request(server.port, "GET", "/vendor/katex/fonts/KaTeX_Main-Regular.woff2", b"").unwrap();
    assert_eq!(&fonts[..4], b"wOF2");
    let (_, examples) = request(server.port, "GET", "/examples.json", b"").unwrap();
    let examples: serde_json::Value = serde_json::from_slice(&examples).unwrap();
    let names: Vec<&str> = examples.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    let mut files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".mdiff").map(String::from))
        .collect();
    files.sort();
    assert_eq!(names, files, "the examples menu lists every examples/*.mdiff");
    let backprop = examples.as_array().unwrap().iter().find(|e| e["name"] == "backprop").unwrap();
    assert_eq!(backprop["script"], SEED);
}

#[test]
fn serve_stops_a_derivation_at_its_time_limit() {
    let server = Server::start(&["--timeout", "0.3", "--workers", "1"]);
    // Work for seconds: 300 layers, and the Hessian through all of them.
    let mut script = String::from("x: n; A: n x n\ny0 = x\n");
    for i in 1..=300 {
        script += &format!("y{i} = tanh(A y{}) + y{}\n", i - 1, i - 1);
    }
    script += "L = y300^T y300\n∂L/∂A\n∂L/∂x\nhessian(L, x)\n";
    let started = std::time::Instant::now();
    let (status, v) = server.derive(&serde_json::json!({ "script": script }));
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(v["error"]["kind"], "limit", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("longer than 0.3 s"), "{v}");
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    // The server goes on.
    let (_, v) = server.derive(&serde_json::json!({ "script": "x: n; grad(x^T x, x)", "code": false }));
    assert_eq!(v["items"][0]["text"], "2 x");
}
