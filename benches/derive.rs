//! Derivation time: the seed script, L-layer networks (every ∂L/∂Wi), deep
//! networks as one backward program (MLP, RNN and residual chain, depth 32
//! to 256), a 12-block transformer (every parameter, one query each and as
//! one program), twenty textbook gradients, and a 200-term sum.
//!
//! ```sh
//! cargo bench --bench derive
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use matdiff::Session;
use std::hint::black_box;

#[path = "../tests/common/network.rs"]
mod network;
use network::{deep, network, transformer};

const TEXTBOOK: &[&str] = &[
    "grad(a^T X b, X)",
    "grad(a^T X^T b, X)",
    "grad(tr(A X), X)",
    "grad(tr(X^T X), X)",
    "grad(tr(X^T A X), X)",
    "grad(det(X), X)",
    "grad(logdet(X), X)",
    "grad(a^T X^-1 b, X)",
    "grad(x^T A x, x)",
    "grad(x^T S x, x)",
    "grad(‖x - a‖², x)",
    "grad(‖X‖², X)",
    "grad((A x + b)^T S (A x + b), x)",
    "grad(tr(X A X^T B), X)",
    "grad(sum(exp(A x)), x)",
    "grad(sum(log(1 + exp(A x))), x)",
    "grad(tr(X^-1 A), X)",
    "grad(det(X^3), X)",
    "grad(‖A x - b‖² + ‖x‖², x)",
    "grad(sum(σ(X a) ∘ (X b)), X)",
];

fn bench(c: &mut Criterion) {
    let seed = include_str!("../examples/backprop.mdiff");
    c.bench_function("seed script", |b| b.iter(|| Session::default().run(black_box(seed)).unwrap()));

    let mut group = c.benchmark_group("L-layer network, every ∂L/∂Wi");
    for layers in [1, 2, 4, 8, 16, 32, 64] {
        let script = network(layers);
        group.bench_with_input(BenchmarkId::from_parameter(layers), &script, |b, s| {
            b.iter(|| Session::default().run(black_box(s)).unwrap())
        });
    }
    group.finish();

    for kind in ["mlp", "rnn", "residual"] {
        let mut group = c.benchmark_group(format!("{kind}, every gradient as one program"));
        group.sample_size(10);
        for depth in [32, 64, 128, 256] {
            let script = deep(kind, depth);
            group.bench_with_input(BenchmarkId::from_parameter(depth), &script, |b, s| {
                b.iter(|| Session::default().run(black_box(s)).unwrap())
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("12-block transformer, every parameter");
    group.sample_size(10);
    for (how, program) in [("one query each", false), ("one program", true)] {
        let script = transformer(12, program);
        group.bench_with_input(BenchmarkId::from_parameter(how), &script, |b, s| {
            b.iter(|| Session::default().run(black_box(s)).unwrap())
        });
    }
    group.finish();

    let decls = "X: n x n; A: n x n; B: n x n; S: n x n symmetric; a: n; b: n; x: n\n";
    let textbook: String = format!("{decls}{}", TEXTBOOK.join("\n"));
    c.bench_function("20 textbook gradients", |b| b.iter(|| Session::default().run(black_box(&textbook)).unwrap()));

    let sum: Vec<String> = (1..=200).map(|i| format!("{i} A x")).collect();
    let sum = format!("A: n x n; x: n\nsimplify({})", sum.join(" + "));
    c.bench_function("200-term sum", |b| b.iter(|| Session::default().run(black_box(&sum)).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
