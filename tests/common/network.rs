//! Scripts of networks, for the tests and the benchmarks (each uses some).
#![allow(dead_code)]

/// An L-layer tanh network with row vectors and a squared loss, asking for
/// the gradient of every weight matrix.
pub fn network(layers: usize) -> String {
    let mut s = String::from("x: 1 x n; y: 1 x n\n");
    for i in 1..=layers {
        s.push_str(&format!("W{i}: n x n; b{i}: 1 x n\n"));
    }
    let mut prev = "x".to_string();
    for i in 1..=layers {
        s.push_str(&format!("d{i} = {prev} W{i} + b{i}\nh{i} = tanh(d{i})\n"));
        prev = format!("h{i}");
    }
    s.push_str(&format!("L = ({prev} - y)({prev} - y)^T\n"));
    for i in 1..=layers {
        s.push_str(&format!("∂L/∂W{i}\n"));
    }
    s
}

/// The deep networks whose derivation must scale linearly with depth, as
/// scripts ending with one backward program of every parameter:
/// `mlp` (a batch through `L` tanh layers with biases, MSE), `rnn` (one
/// tanh cell unrolled over `L` steps, shared weights) and `residual`
/// (`z_i = tanh(W_i z_{i-1}) + z_{i-1}`).
pub fn deep(kind: &str, depth: usize) -> String {
    let mut s = String::new();
    let params: Vec<String> = match kind {
        "mlp" => {
            s.push_str("X: N x n; Y: N x n\nH0 = X\n");
            for i in 1..=depth {
                s.push_str(&format!("W{i}: n x n; b{i}: 1 x n\nH{i} = tanh(H{} W{i} + b{i})\n", i - 1));
            }
            s.push_str(&format!("L = ‖H{depth} - Y‖² / N\n"));
            (1..=depth).flat_map(|i| [format!("W{i}"), format!("b{i}")]).collect()
        }
        "rnn" => {
            s.push_str("W, U: n x n; b, y, h0: 1 x n\n");
            for t in 1..=depth {
                s.push_str(&format!("x{t}: 1 x n\nh{t} = tanh(h{} W + x{t} U + b)\n", t - 1));
            }
            s.push_str(&format!("L = ‖h{depth} - y‖²\n"));
            vec!["W".into(), "U".into(), "b".into()]
        }
        "residual" => {
            s.push_str("x, y: n\nz0 = x\n");
            for i in 1..=depth {
                s.push_str(&format!("W{i}: n x n\nz{i} = tanh(W{i} z{}) + z{}\n", i - 1, i - 1));
            }
            s.push_str(&format!("L = ‖z{depth} - y‖²\n"));
            (1..=depth).map(|i| format!("W{i}")).collect()
        }
        other => panic!("no network `{other}`"),
    };
    s.push_str(&format!("∂L/∂({})\n", params.join(", ")));
    s
}

/// `blocks` transformer blocks on `T` tokens of width `d` (attention,
/// residual, row layer norm, a ReLU MLP, residual, layer norm), then the
/// gradient of every parameter as one backward program (`program`) or as
/// one query each.
pub fn transformer(blocks: usize, program: bool) -> String {
    let mut s = String::from("X0, Y: T x d\nε: scalar\n");
    let mut params = Vec::new();
    for i in 1..=blocks {
        s.push_str(&format!("Wq{i}, Wk{i}, Wv{i}: d x d\ng{i}, c{i}, h{i}, e{i}: 1 x d\nU{i}: d x f\nu{i}: 1 x f\nP{i}: f x d\np{i}: 1 x d\n"));
        let x = format!("X{}", i - 1);
        s.push_str(&format!(
            "A{i} = softmax({x} Wq{i} ({x} Wk{i})ᵀ / sqrt(d))\n\
             R{i} = {x} + A{i} {x} Wv{i}\n\
             C{i} = R{i} - R{i} ones(d, 1) / d\n\
             N{i} = C{i} ./ sqrt((C{i} ∘ C{i}) ones(d, 1) / d + ε) ∘ g{i} + c{i}\n\
             G{i} = N{i} + relu(N{i} U{i} + u{i}) P{i} + p{i}\n\
             D{i} = G{i} - G{i} ones(d, 1) / d\n\
             X{i} = D{i} ./ sqrt((D{i} ∘ D{i}) ones(d, 1) / d + ε) ∘ h{i} + e{i}\n"
        ));
        for p in ["Wq", "Wk", "Wv", "g", "c", "U", "u", "P", "p", "h", "e"] {
            params.push(format!("{p}{i}"));
        }
    }
    s.push_str(&format!("L = ‖X{blocks} - Y‖² / T\n"));
    if program {
        s.push_str(&format!("∂L/∂({})\n", params.join(", ")));
    } else {
        for p in &params {
            s.push_str(&format!("∂L/∂{p}\n"));
        }
    }
    s
}
