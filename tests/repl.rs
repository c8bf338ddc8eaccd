//! The REPL through a real pseudo-terminal: the seed network typed line by
//! line, with a typo and a shape error on the way.

use rexpect::session::spawn_command;
use std::process::Command;

#[test]
fn repl_recovers_from_errors_and_answers() -> Result<(), rexpect::error::Error> {
    let home = std::env::temp_dir().join(format!("matdiff-repl-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_matdiff"));
    cmd.env("HOME", &home).env("XDG_DATA_HOME", &home).env("TERM", "dumb");
    let mut p = spawn_command(cmd, Some(20_000))?;
    p.exp_string("matdiff>")?;
    for line in [
        "n0: 1 x 2",
        "W1: 2 x 3",
        "b1: 1 x 3",
        "W2: 3 x 2",
        "b2: 1 x 2",
        "y: 1 x 2",
        "f1, f2: R -> R",
        "d1 = n0 W1 + b1",
        "n1 = f1(d1)",
    ] {
        p.send_line(line)?;
        p.exp_string("matdiff>")?;
    }
    // A typo: the name is unknown, and the session goes on.
    p.send_line("d2 = n1 W3 + b2")?;
    p.exp_string("unknown name `W3`")?;
    p.exp_string("matdiff>")?;
    // A shape error: inner sizes differ.
    p.send_line("d2 = n0 W2 + b2")?;
    p.exp_string("cannot multiply")?;
    p.exp_string("matdiff>")?;
    for line in ["d2 = n1 W2 + b2", "n2 = f2(d2)", "L = (n2 - y)(n2 - y)^T"] {
        p.send_line(line)?;
        p.exp_string("matdiff>")?;
    }
    // The pseudo-terminal reader sees bytes, so ask for ASCII output.
    p.send_line(":format ascii")?;
    p.exp_string("matdiff>")?;
    p.send_line("grad(L, W1)")?;
    p.exp_string("dL/dW1 = 2 n0^T (((n2 - y) .* f2'(d2)) W2^T .* f1'(d1))")?;
    p.exp_string("matdiff>")?;
    p.send_line(":env")?;
    p.exp_string("d2 = n1 W2 + b2")?;
    p.send_line(":quit")?;
    p.exp_eof()?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

#[test]
fn repl_code_formats_print_each_answer_as_python() -> Result<(), rexpect::error::Error> {
    let home = std::env::temp_dir().join(format!("matdiff-repl-numpy-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_matdiff"));
    cmd.env("HOME", &home).env("XDG_DATA_HOME", &home).env("TERM", "dumb");
    let mut p = spawn_command(cmd, Some(20_000))?;
    p.exp_string("matdiff>")?;
    p.send_line("x: n; A: n x n; f = x^T A x")?;
    p.exp_string("matdiff>")?;
    p.send_line(":format numpy")?;
    p.exp_string("matdiff>")?;
    p.send_line("grad(f, x)")?;
    p.exp_string("import numpy as np")?;
    p.exp_string("def grad_f_x(A, x):")?;
    p.exp_string("_dtype = np.result_type(A, x, 1.0)")?;
    p.exp_string("return np.array(")?;
    p.exp_string("matdiff>")?;
    // The same function for JAX and for PyTorch.
    p.send_line(":format jax")?;
    p.exp_string("matdiff>")?;
    p.send_line("grad(f, x)")?;
    p.exp_string("import jax.numpy as jnp")?;
    p.exp_string("def grad_f_x(A, x):")?;
    p.exp_string("_dtype = jnp.result_type(A, x, 1.0)")?;
    p.exp_string("matdiff>")?;
    p.send_line(":format torch")?;
    p.exp_string("matdiff>")?;
    p.send_line("grad(f, x)")?;
    p.exp_string("import torch")?;
    p.exp_string("def grad_f_x(A, x):")?;
    p.exp_string("_dtype, _device = _dtype_device(A, x)")?;
    p.exp_string("matdiff>")?;
    p.send_line(":quit")?;
    p.exp_eof()?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
