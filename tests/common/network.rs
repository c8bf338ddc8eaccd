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
