//! The gradient of every layer of an L-layer network costs what hand-written
//! backpropagation costs for that gradient, operation for operation.

use matdiff::eval::flops::count;
use matdiff::Session;
use std::collections::HashMap;

use crate::network::network;

/// Hand-written backprop for ∂L/∂Wi, given the forward pass: e = hL - y (n),
/// δ = 2 e ∘ (1 - hL²) (4n: square, subtract, multiply, scale), then per
/// layer above i: δ ← (δ Wⱼᵀ) ∘ (1 - hⱼ₋₁²) (n² + 3n), then hᵢ₋₁ᵀ δ (n²).
fn backprop(layers: u64, i: u64, n: u64) -> u64 {
    n + 4 * n + (layers - i) * (n * n + 3 * n) + n * n
}

#[test]
fn every_layer_gradient_costs_what_backprop_costs() {
    let n = 100u64;
    let sizes: HashMap<String, usize> = [("n".to_string(), n as usize)].into();
    let mut table = String::from("L  layer  matdiff  backprop\n");
    for layers in [1u64, 2, 4, 8, 16] {
        let mut s = Session::default();
        let answers = s.answers(&network(layers as usize)).unwrap();
        for (i, a) in answers.iter().enumerate() {
            let (ours, hand) = (count(&a.expr, &sizes), backprop(layers, i as u64 + 1, n));
            table.push_str(&format!("{layers:<2} {:<6} {ours:<8} {hand}\n", i + 1));
            assert_eq!(ours, hand, "L = {layers}, layer {}: {}", i + 1, s.render(a));
        }
    }
    println!("{table}");
}
