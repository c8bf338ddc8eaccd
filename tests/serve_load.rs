//! `matdiff serve` under load: 200 requests at once, ordinary and hostile
//! (huge bodies, deep brackets, derivations that blow up, garbage bytes).
//! Each is answered or refused within its limit, the server's memory stays
//! bounded, and it answers afterwards.

use crate::serve::{request, Server, SEED};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory of a process, in KiB (`VmRSS`, or `VmHWM` for its peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The direct children of a process.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return vec![] };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// The script of request `i`: one of eight kinds.
fn body(i: usize) -> Vec<u8> {
    let script = |s: String| serde_json::json!({ "script": s }).to_string().into_bytes();
    match i % 8 {
        // The seed network, with steps, checks and code.
        0 => script(SEED.to_string()),
        // 4 MiB of body: refused before it is read.
        1 => script("x: n\n".repeat(800_000)),
        // Brackets 20 000 deep.
        2 => script(format!("x: n\ny = {}x{}", "(".repeat(20_000), ")".repeat(20_000))),
        // 300 layers, and the Hessian through them all: seconds of work.
        3 => {
            let mut s = String::from("x: n; A: n x n\ny0 = x\n");
            for k in 1..=300 {
                s += &format!("y{k} = tanh(A y{0}) + y{0}\n", k - 1);
            }
            s += "L = y300^T y300\n∂L/∂A\nhessian(L, x)\n";
            script(s)
        }
        // Garbage bytes.
        4 => (0..30_000u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        // Valid JSON, a script of noise.
        5 => script((0..5_000u32).map(|k| char::from_u32(0x20 + (k * 7919) % 0x2000).unwrap_or('?')).collect()),
        // A product too large to check: it needs more memory than allowed.
        6 => script("X: 5000 x 5000\nf = tr(X X X)\ngrad(f, X)".to_string()),
        // Just under the body limit: 60 KiB of declarations.
        _ => script((0..4_000).map(|k| format!("M{k}: n x m\n")).collect()),
    }
}

#[test]
fn serve_survives_200_concurrent_hostile_requests_with_bounded_memory() {
    const TIMEOUT: f64 = 2.0;
    let server = Server::start(&["--workers", "2", "--queue", "16", "--timeout", "2", "--memory", "768"]);
    let pid = server.pid();
    // Sample the memory of the server and of its derivations while the load runs.
    let done = Arc::new(AtomicBool::new(false));
    let peak_total = Arc::new(AtomicU64::new(0));
    let peak_child = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak_total, peak_child) = (done.clone(), peak_total.clone(), peak_child.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let kids: Vec<u64> = children(pid).into_iter().map(|c| memory_kib(c, "VmRSS")).collect();
                peak_child.fetch_max(kids.iter().copied().max().unwrap_or(0), Ordering::Relaxed);
                peak_total.fetch_max(memory_kib(pid, "VmRSS") + kids.iter().sum::<u64>(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let (port, barrier) = (server.port, barrier.clone());
            std::thread::spawn(move || {
                let body = body(i);
                barrier.wait();
                let t = Instant::now();
                let r = request(port, "POST", "/derive", &body);
                (i, r, t.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().expect("a client")).collect();
    let wall = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    // Every request has its answer or its refusal, within the time a request
    // may wait for a worker plus the time a derivation may take.
    let limit = Duration::from_secs_f64(2.0 * TIMEOUT + 3.0);
    let mut by_status = std::collections::BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let mut stopped = 0;
    for (i, r, took) in &results {
        let (status, out) = r.as_ref().unwrap_or_else(|e| panic!("request {i} (kind {}) failed: {e}", i % 8));
        assert!([200, 400, 413, 503].contains(status), "request {i}: status {status}");
        assert!(*took <= limit, "request {i} (kind {}) took {took:?}", i % 8);
        let v: serde_json::Value = serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("request {i}: {e} in {:?}", String::from_utf8_lossy(out)));
        match (i % 8, *status) {
            (0, 200) => assert!(v["items"].as_array().unwrap().iter().any(|a| a["query"] == "∂L/∂W1"), "{v}"),
            (1, s) => assert_eq!(s, 413, "request {i}: {v}"),
            (4, s) => assert!(s == 400 || s == 503, "request {i}: {s} {v}"),
            (2 | 5 | 6, 200) => assert!(v["error"]["message"].is_string(), "kind {}: {v}", i % 8),
            (_, 200) => {}
            (_, s) => assert!(s == 503 || s == 413, "request {i}: {s} {v}"),
        }
        if v["error"]["kind"] == "limit" {
            stopped += 1;
        }
        *by_status.entry(*status).or_insert(0) += 1;
        slowest = slowest.max(*took);
    }
    let hwm = memory_kib(pid, "VmHWM");
    let (total, child) = (peak_total.load(Ordering::Relaxed), peak_child.load(Ordering::Relaxed));
    eprintln!(
        "load: 200 requests in {:.2} s; by status {by_status:?}; {stopped} stopped at a limit; slowest {:.2} s; \
         server peak RSS {} MiB; largest derivation {} MiB; server and derivations together {} MiB",
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
        hwm / 1024,
        child / 1024,
        total / 1024
    );
    assert!(by_status.get(&200).copied().unwrap_or(0) >= 2, "some requests are answered: {by_status:?}");
    // The server holds requests, not derivations: its own memory stays small,
    // and each derivation stays under its limit.
    assert!(hwm < 128 * 1024, "the server's peak RSS is {hwm} KiB");
    assert!(child < 768 * 1024, "a derivation's peak RSS is {child} KiB");
    // And it still answers.
    let (status, v) = server.derive(&serde_json::json!({ "script": SEED, "code": false }));
    assert_eq!(status, 200);
    assert!(v["error"].is_null(), "{v}");
}
