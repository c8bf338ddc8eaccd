//! Python shared by the tests that run generated NumPy code.

/// The stand-in for a declared function `f` differentiated `k` times, as
/// `matdiff::eval::user_function` defines it: `user("f", k)` in Python, on
/// NumPy arrays; `user("f", k, jnp.sin)` or `user("f", k, torch.sin)` on
/// another framework's arrays.
pub const USER_FUNCTIONS: &str = r#"
def user(name, k, sin=np.sin):
    c = 0.3
    for b in name.encode():
        c = (c * 7.0 + b) % 3.0
    def f(x):
        s = sin(x + c + k * (math.pi / 2))
        return s + (x * x / 4.0 if k == 0 else x / 2.0 if k == 1 else 0.5 if k == 2 else 0.0)
    return f
"#;

/// A Python program: `driver` with [`USER_FUNCTIONS`] defined first.
pub fn with_user_functions(driver: &str) -> String {
    format!("import math\nimport numpy as np\n{USER_FUNCTIONS}\n{driver}")
}

/// Runs the Python `program` with `input` on its standard input, written
/// from another thread so that neither side waits on a full pipe.
pub fn run(program: &str, input: String) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .args(["-c", program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it with numpy)");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python3 finishes");
    let _ = writer.join();
    out
}
