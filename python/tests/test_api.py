"""The package's API: derive, the answers' notations, checks, conventions,
errors, and the generated functions' signatures."""

import concurrent.futures
import pathlib
import inspect

import pytest

import matdiff
from conftest import example

SEED_W1 = "2 n0ᵀ (((n2 - y) ∘ f2'(d2)) W2ᵀ ∘ f1'(d1))"


def test_seed_answers_in_order(seed):
    answers = matdiff.derive(seed)
    assert [a.query for a in answers] == [
        "dL", "∂L/∂n2ᵀ", "∂n2/∂d2ᵀ", "∂d2/∂vec(W2)ᵀ", "∂L/∂vec(W2)ᵀ", "∂L/∂vec(W1)ᵀ", "∂L/∂W1"]
    g = answers[-1]
    assert isinstance(g, matdiff.Answer) and not isinstance(g, matdiff.Program)
    assert g.text == SEED_W1
    assert g.ascii == "2 n0^T (((n2 - y) .* f2'(d2)) W2^T .* f1'(d1))"
    assert g.shape == (2, 3)
    assert (g.layout, g.vec) == ("denominator", "row")
    assert str(g) == f"∂L/∂W1 = {SEED_W1}"
    assert repr(g) == f"<matdiff.Answer ∂L/∂W1 = {SEED_W1}>"
    assert g.display("ascii").startswith("dL/dW1 = 2 n0^T")
    assert (g.line, g.column) == (22, 1)
    assert answers[3].text == "n1ᵀ ⊗ I"
    assert answers[3].shape == (6, 2)


def test_latex_for_notebooks(seed):
    g = matdiff.derive(seed)[-1]
    assert g.latex.startswith(r"2 \, \mathbf{n}_{0}^\top")
    shown = g._repr_latex_()
    assert shown == rf"$$\frac{{\partial L}}{{\partial \mathbf{{W}}_{{1}}}} = {g.latex}$$"
    assert g.display("latex") == shown[2:-2]


def test_steps(seed):
    g = matdiff.derive(seed, steps=True)[-1]
    assert [s.lhs for s in g.steps][:2] == ["dL", "∂L/∂n2ᵀ"]
    assert g.steps[-1].lhs == "∂L/∂W1" and g.steps[-1].text == SEED_W1
    assert str(g.steps[-1]).startswith("∂L/∂W1 = vec⁻¹(∂L/∂vec(W1)ᵀ) = ")
    # Printed, each line names the rules it used.
    assert str(g).splitlines()[-1] == f"{g.steps[-1]}  # vec⁻¹ to the shape of X"
    assert g.steps[0].rules == ["product rule", "d(Xᵀ) = (dX)ᵀ"]
    assert g.steps[-1].rules == ["vec⁻¹ to the shape of X"]
    latex = g._repr_latex_()
    assert latex.startswith("$$\\begin{aligned}\n") and latex.endswith("\\end{aligned}$$")
    assert latex.count(" &= ") == len(g.steps)
    assert g.steps[0]._repr_latex_().startswith(r"$$\mathrm{d}L = ")
    assert matdiff.derive(seed)[-1].steps == []


def test_json_is_the_command_lines(seed):
    j = matdiff.derive(seed)[-1].to_json()
    assert j["query"] == "∂L/∂W1" and j["text"] == SEED_W1 and j["shape"] == ["2", "3"]
    assert (j["layout"], j["vec"]) == ("denominator", "row")


def test_check(seed):
    answers = matdiff.derive(seed)
    for a in answers:
        err = a.check()
        assert err is not None and err <= matdiff.TOLERANCE, (a.query, err)
    # A simplified expression is checked against the script as written; a shape is not checked.
    assert matdiff.derive("A: n x n; simplify((A^T)^T I + 0)")[0].check() <= matdiff.TOLERANCE
    assert matdiff.derive("A: n x n; shape(A A)")[0].check() is None


def test_simplify_and_shape_queries():
    a, s = matdiff.derive("A: n x m; simplify((A^T)^T I + 0); shape(A^T A)")
    assert a.text == "A" and a.shape == ("n", "m")
    assert s.shape == ("m", "m")


def test_conventions():
    script = "W: 2 x 3; x: 1 x 2; y = x W; ∂y/∂vec(W)^T"
    den = matdiff.derive(script)[0]
    num = matdiff.derive(script, layout="numerator")[0]
    col = matdiff.derive(script, vec="col")[0]
    assert den.shape == (6, 3) and num.shape == (3, 6)
    assert (num.layout, col.vec) == ("numerator", "col")
    assert den.text != col.text
    for a in (den, num, col):
        assert a.check() <= matdiff.TOLERANCE
    with pytest.raises(ValueError, match="layout"):
        matdiff.derive(script, layout="rows")
    with pytest.raises(ValueError, match="vec"):
        matdiff.derive(script, vec="column")


def test_program():
    p = matdiff.derive(example("mlp") + "\n∂L/∂(W1, b1, W2, b2)\n")[-1]
    assert isinstance(p, matdiff.Program)
    assert p.query == "∂L/∂(W1, b1, W2, b2)"
    assert [g.query for g in p.gradients] == ["∂L/∂W1", "∂L/∂b1", "∂L/∂W2", "∂L/∂b2"]
    assert len(p) == 4 and p[0] is p.gradients[0] and list(p) == p.gradients
    assert p.shape == (("d", "h"), (1, "h"), ("h", "k"), (1, "k"))
    assert p.adjoints and all(name in p.text for name, _ in p.adjoints)
    assert p.check() <= matdiff.TOLERANCE
    assert p.gradients[2].check() <= matdiff.TOLERANCE
    assert p._repr_latex_().startswith("$$\\begin{aligned}")
    fn = p.numpy()
    assert fn.__name__ == "value_and_grad_L"
    assert list(inspect.signature(fn).parameters) == ["W1", "W2", "X", "Y", "b1", "b2"]
    # Each gradient of the program also has a function of its own.
    import numpy as np
    g = p.gradients[2].numpy()
    assert g.__name__ == "grad_L_W2"
    rng = np.random.default_rng(0)
    v = {"X": rng.standard_normal((5, 3)), "Y": rng.standard_normal((5, 2)), "W1": rng.standard_normal((3, 4)),
         "b1": rng.standard_normal((1, 4)), "W2": rng.standard_normal((4, 2)), "b2": rng.standard_normal((1, 2))}
    loss, grads = fn(**v)
    assert np.allclose(g(**{k: v[k] for k in inspect.signature(g).parameters}), grads[2])


def test_generated_functions(seed):
    g = matdiff.derive(seed)[-1]
    want = ["W1", "W2", "b1", "b2", "n0", "y", "f1", "f1_prime", "f2", "f2_prime"]
    for backend in matdiff.BACKENDS:
        source = g.code(backend)
        fn = getattr(g, backend)()
        assert fn.__name__ == "grad_L_W1"
        assert list(inspect.signature(fn).parameters) == want
        assert fn.__doc__ == f"∂L/∂W1 = {SEED_W1}"
        assert fn.__matdiff_source__ == source
        assert "def grad_L_W1(" in inspect.getsource(fn)
    assert g.code("numpy").startswith("import numpy as np\n")
    assert g.code("jax").startswith("import jax.numpy as jnp\n")
    assert g.code("torch").startswith("import torch\n")
    # Each call executes the code in a fresh module.
    assert g.numpy() is not g.numpy()
    with pytest.raises(ValueError, match="backend"):
        g.code("tensorflow")


def test_size_keyword():
    g = matdiff.derive("x: n; f = sum(x) / n; grad(f, x)")[0]
    assert "n" in inspect.signature(g.numpy()).parameters


@pytest.mark.parametrize(
    "script, line, column, text, words",
    [
        ("A: n x n; x: n\ny = x^T B x\n", 2, 9, "B", "unknown name"),
        ("A: n x n\nB: m x m\nC = A B\n", 3, 5, "A B", "shape"),
        ("A: n x n\nB = A +* A\n", 2, 8, "*", "syntax"),
    ],
)
def test_errors_carry_line_column_and_text(script, line, column, text, words):
    with pytest.raises(matdiff.MatdiffError) as info:
        matdiff.derive(script)
    e = info.value
    assert isinstance(e, ValueError)
    assert (e.line, e.column) == (line, column), str(e)
    assert e.text == text, str(e)
    assert words in str(e).lower() or words in e.message.lower()
    assert str(e).startswith(f"line {line}, column {column}, at `{text}`: ")
    assert f"<script>:{line}:{column}" in e.report
    assert type(e).__module__ == "matdiff" and type(e).__name__ == "MatdiffError"


def test_not_a_string():
    with pytest.raises(TypeError):
        matdiff.derive(b"x: n")


def test_threads(seed):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: matdiff.derive(seed)[-1].text, range(8)))
    assert texts == [SEED_W1] * 8


def test_version_and_stubs():
    import pathlib
    assert matdiff.__version__ == "0.1.0"
    here = pathlib.Path(matdiff.__file__).parent
    assert (here / "py.typed").exists() and (here / "__init__.pyi").exists()


EXAMPLES = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parents[2] / "examples").glob("*.mdiff"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example(name):
    """Every example derives; each answer typesets, checks, and has a
    function in each backend."""
    answers = matdiff.derive(example(name))
    assert answers
    for a in answers:
        assert a._repr_latex_().startswith("$$")
        assert a.query in str(a) or a.query in ("show", "simplify", "shape"), (a.query, str(a))
        err = a.check()
        assert err is None or err <= matdiff.TOLERANCE, (a.query, err)
        for backend in matdiff.BACKENDS:
            source = a.code(backend)
            assert f"def {a.function(backend).__name__}(" in source
