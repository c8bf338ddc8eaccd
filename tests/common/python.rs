//! Python shared by the tests that run generated NumPy code.

/// The stand-in for a declared function `f` differentiated `k` times, as
/// `matdiff::eval::user_function` defines it: `user("f", k)` in Python.
pub const USER_FUNCTIONS: &str = r#"
def user(name, k):
    c = 0.3
    for b in name.encode():
        c = (c * 7.0 + b) % 3.0
    def f(x):
        s = np.sin(x + c + k * (math.pi / 2))
        return s + (x * x / 4.0 if k == 0 else x / 2.0 if k == 1 else 0.5 if k == 2 else 0.0)
    return f
"#;

/// A Python program: `driver` with [`USER_FUNCTIONS`] defined first.
pub fn with_user_functions(driver: &str) -> String {
    format!("import math\nimport numpy as np\n{USER_FUNCTIONS}\n{driver}")
}
