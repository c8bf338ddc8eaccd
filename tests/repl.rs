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
    p.exp_string("return np.asarray(((A + A.T) @ x), dtype=_dtype)")?;
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

/// A REPL in a terminal that handles control keys, with its own history.
fn spawn_repl(tag: &str) -> Result<(rexpect::session::PtySession, std::path::PathBuf), rexpect::error::Error> {
    let home = std::env::temp_dir().join(format!("matdiff-repl-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_matdiff"));
    cmd.env("HOME", &home).env("XDG_DATA_HOME", &home).env("TERM", "xterm");
    let mut p = spawn_command(cmd, Some(20_000))?;
    p.exp_string("matdiff>")?;
    Ok((p, home))
}

#[test]
fn repl_commands_list_their_values_and_confirm_changes() -> Result<(), rexpect::error::Error> {
    let (mut p, home) = spawn_repl("commands")?;
    p.send_line(":format")?;
    p.exp_string(":format takes one of: text, ascii, latex, json, numpy, jax, torch")?;
    p.send_line(":layout sideways")?;
    p.exp_string("`sideways` is not a value of :layout; it takes one of: denominator, numerator")?;
    p.send_line(":steps")?;
    p.exp_string(":steps takes on or off")?;
    p.send_line(":load")?;
    p.exp_string(":load takes a file name")?;
    p.send_line(":frobnicate")?;
    p.exp_string("unknown command `:frobnicate`; the commands are :help :steps")?;
    p.send_line(":format ascii")?;
    p.exp_string("format: ascii")?;
    p.send_line(":vec col")?;
    p.exp_string("vec: col (vec stacks columns)")?;
    p.send_line(":check on")?;
    p.exp_string("check: on")?;
    // A bare expression prints its shape as a definition does.
    p.send_line("x: n; A: n x n; q = A x")?;
    p.exp_string("q: n x 1")?;
    p.send_line("q")?;
    p.exp_string("q: n x 1")?;
    p.send_line(":reset")?;
    p.exp_string("every declaration and definition is forgotten")?;
    p.send_line(":env")?;
    p.exp_string("nothing is declared or defined")?;
    // `:load` completes file names; loading twice suggests `:reset`.
    p.send_line(":load examples/least_sq\t")?;
    p.exp_string("dL/dA = 2 r x^T")?;
    p.exp_string("checked")?;
    p.send_line(":load examples/least_squares.mdiff")?;
    p.exp_string("is already declared")?;
    p.exp_string("was loaded before, so its names exist already; :reset forgets them")?;
    p.send_line(":quit")?;
    p.exp_eof()?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

#[test]
fn repl_continuation_lines_cancel_and_leave_as_documented() -> Result<(), rexpect::error::Error> {
    let (mut p, home) = spawn_repl("continue")?;
    p.send_line(":help")?;
    p.exp_string("Ctrl-C or")?;
    // Ctrl-C cancels the unfinished input, which is then never run.
    p.send_line("x: n; y = (x")?;
    p.exp_string("...>")?;
    p.send_control('c')?;
    p.exp_string("(input cancelled)")?;
    p.send_line("x")?;
    p.exp_string("unknown name `x`")?;
    // A command on a continuation line ends it; `:quit` leaves.
    p.send_line("A: 2 x 2; B = (A")?;
    p.exp_string("...>")?;
    p.send_line(":quit")?;
    p.exp_string("leaving; the unfinished input was not run")?;
    p.exp_eof()?;
    // Ctrl-D too.
    let (mut p, _) = spawn_repl("continue")?;
    p.send_line("B = (I")?;
    p.exp_string("...>")?;
    p.send_control('d')?;
    p.exp_string("leaving; the unfinished input was not run")?;
    p.exp_eof()?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
