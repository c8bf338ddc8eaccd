//! The rules a derivation step uses, named as a textbook names them, so that
//! `--steps` says why each line follows: `dL = … # product rule`.
//!
//! Rules are read off what a step is made from (the definition a
//! differential is taken of, the differential a derivative is identified
//! from), not off its printed result, so a name never depends on how the
//! result was simplified.

use crate::ir::{Builtin, Expr, Func, Kind, Op, VecOrder};

/// A rule of matrix differential calculus, or of identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `d(XY) = dX Y + X dY`
    Product,
    /// `d(X ∘ Y) = dX ∘ Y + X ∘ dY`
    HadamardProduct,
    /// `d(X ⊗ Y) = dX ⊗ Y + X ⊗ dY`
    KroneckerProduct,
    /// `d(X ./ Y) = dX ./ Y - X ∘ dY ./ Y²`, and `d(X / s)` likewise
    Quotient,
    /// `d(Xᵀ) = (dX)ᵀ`
    Transpose,
    /// `d(X⁻¹) = -X⁻¹ dX X⁻¹`
    Inverse,
    /// `d(Xᵏ) = Σ Xⁱ dX Xᵏ⁻¹⁻ⁱ`
    Power,
    /// `d(sᵏ) = k sᵏ⁻¹ ds` for a 1×1 `s`
    ScalarPower,
    /// `d(X .^ k) = k X .^ (k-1) ∘ dX`
    EntrywisePower,
    /// `d tr X = tr dX`, and `sum`, `vec`, `diag` likewise: linear maps
    Linear,
    /// `d det X = det X tr(X⁻¹ dX)`
    Determinant,
    /// `d log det X = tr(X⁻¹ dX)`
    LogDeterminant,
    /// `d‖X‖ = ⟨X, dX⟩ / ‖X‖`
    Norm,
    /// `d f(X) = f'(X) ∘ dX` for a function applied entrywise
    Entrywise,
    /// The differential of a function of a whole matrix (`softmax`)
    MatrixFunction,
    /// `d(dX) = 0`: a higher differential
    HigherDifferential,
    /// `dL = tr(Aᵀ dX)` (or `aᵀ dx`) identifies the derivative `A`
    Identification,
    /// A 1×1 value equals its transpose
    ScalarTranspose,
    /// `vec(A X B) = (Bᵀ ⊗ A) vec X` in column order
    VecProductColumns,
    /// `vec(A X B) = (A ⊗ Bᵀ) vec X` in row order
    VecProductRows,
    /// `vec(a ∘ X) = diag(vec a) vec X`
    VecHadamard,
    /// `vec(Xᵀ) = K vec X`
    VecTranspose,
    /// The chain rule: Jacobians multiply along each path
    Chain,
    /// Reverse mode: `⟨Ḡ, dF⟩ = ⟨X̄, dX⟩` through each definition
    Reverse,
    /// `vec⁻¹`: the gradient has `X`'s shape
    Reshape,
    /// With respect to a symmetric `X`: `(G + Gᵀ)/2`
    Symmetric,
    /// The Hessian is the Jacobian of the gradient
    HessianOfGradient,
}

impl Rule {
    /// The rule in text (Unicode).
    pub fn text(self) -> &'static str {
        use Rule::*;
        match self {
            Product => "product rule",
            HadamardProduct => "product rule for ∘",
            KroneckerProduct => "product rule for ⊗",
            Quotient => "quotient rule",
            Transpose => "d(Xᵀ) = (dX)ᵀ",
            Inverse => "d(X⁻¹) = -X⁻¹ dX X⁻¹",
            Power => "d(Xᵏ) = Σ Xⁱ dX Xᵏ⁻¹⁻ⁱ",
            ScalarPower => "d(sᵏ) = k sᵏ⁻¹ ds",
            EntrywisePower => "d(X .^ k) = k X .^ (k-1) ∘ dX",
            Linear => "d is linear: d tr X = tr dX",
            Determinant => "d det X = det X tr(X⁻¹ dX)",
            LogDeterminant => "d log det X = tr(X⁻¹ dX)",
            Norm => "d‖X‖ = tr(Xᵀ dX) / ‖X‖",
            Entrywise => "d f(X) = f'(X) ∘ dX",
            MatrixFunction => "differential of a matrix function",
            HigherDifferential => "d(dX) = 0",
            Identification => "identification: dL = tr(Aᵀ dX) gives A",
            ScalarTranspose => "a scalar equals its transpose",
            VecProductColumns => "vec(A X B) = (Bᵀ ⊗ A) vec X",
            VecProductRows => "vec(A X B) = (A ⊗ Bᵀ) vec X",
            VecHadamard => "vec(a ∘ X) = diag(vec a) vec X",
            VecTranspose => "vec(Xᵀ) = K vec X",
            Chain => "chain rule",
            Reverse => "chain rule, backward through the definitions",
            Reshape => "vec⁻¹ to the shape of X",
            Symmetric => "symmetric X: (G + Gᵀ)/2",
            HessianOfGradient => "the Jacobian of the gradient",
        }
    }

    /// The rule in ASCII.
    pub fn ascii(self) -> &'static str {
        use Rule::*;
        match self {
            HadamardProduct => "product rule for .*",
            KroneckerProduct => "product rule for kron",
            Transpose => "d(X^T) = (dX)^T",
            Inverse => "d(X^-1) = -X^-1 dX X^-1",
            Power => "d(X^k) = sum X^i dX X^(k-1-i)",
            ScalarPower => "d(s^k) = k s^(k-1) ds",
            EntrywisePower => "d(X .^ k) = k X .^ (k-1) .* dX",
            Determinant => "d det X = det X tr(X^-1 dX)",
            LogDeterminant => "d log det X = tr(X^-1 dX)",
            Norm => "d||X|| = tr(X^T dX) / ||X||",
            Entrywise => "d f(X) = f'(X) .* dX",
            Identification => "identification: dL = tr(A^T dX) gives A",
            VecProductColumns => "vec(A X B) = kron(B^T, A) vec X",
            VecProductRows => "vec(A X B) = kron(A, B^T) vec X",
            VecHadamard => "vec(a .* X) = diag(vec a) vec X",
            VecTranspose => "vec(X^T) = K vec X",
            Reshape => "unvec to the shape of X",
            Symmetric => "symmetric X: (G + G^T)/2",
            other => other.text(),
        }
    }

    /// The rule in LaTeX (text mode words, math for formulas).
    pub fn latex(self) -> &'static str {
        use Rule::*;
        match self {
            Product => r"\text{product rule}",
            HadamardProduct => r"\text{product rule for } \odot",
            KroneckerProduct => r"\text{product rule for } \otimes",
            Quotient => r"\text{quotient rule}",
            Transpose => r"\mathrm{d}(\mathbf{X}^\top) = (\mathrm{d}\mathbf{X})^\top",
            Inverse => r"\mathrm{d}(\mathbf{X}^{-1}) = -\mathbf{X}^{-1} \, \mathrm{d}\mathbf{X} \, \mathbf{X}^{-1}",
            Power => {
                r"\mathrm{d}(\mathbf{X}^k) = \textstyle\sum_i \mathbf{X}^i \, \mathrm{d}\mathbf{X} \, \mathbf{X}^{k-1-i}"
            }
            ScalarPower => r"\mathrm{d}(s^k) = k \, s^{k-1} \, \mathrm{d}s",
            EntrywisePower => {
                r"\mathrm{d}(\mathbf{X}^{\circ k}) = k \, \mathbf{X}^{\circ (k-1)} \odot \mathrm{d}\mathbf{X}"
            }
            Linear => r"\mathrm{d} \operatorname{tr} \mathbf{X} = \operatorname{tr} \mathrm{d}\mathbf{X}",
            Determinant => {
                r"\mathrm{d} \det \mathbf{X} = \det \mathbf{X} \operatorname{tr}(\mathbf{X}^{-1} \mathrm{d}\mathbf{X})"
            }
            LogDeterminant => {
                r"\mathrm{d} \log\det \mathbf{X} = \operatorname{tr}(\mathbf{X}^{-1} \mathrm{d}\mathbf{X})"
            }
            Norm => {
                r"\mathrm{d}\lVert \mathbf{X} \rVert = \operatorname{tr}(\mathbf{X}^\top \mathrm{d}\mathbf{X}) / \lVert \mathbf{X} \rVert"
            }
            Entrywise => r"\mathrm{d} f(\mathbf{X}) = f'(\mathbf{X}) \odot \mathrm{d}\mathbf{X}",
            MatrixFunction => r"\text{differential of a matrix function}",
            HigherDifferential => r"\mathrm{d}(\mathrm{d}\mathbf{X}) = 0",
            Identification => {
                r"\text{identification: } \mathrm{d}L = \operatorname{tr}(\mathbf{A}^\top \mathrm{d}\mathbf{X}) \text{ gives } \mathbf{A}"
            }
            ScalarTranspose => r"\text{a scalar equals its transpose}",
            VecProductColumns => {
                r"\operatorname{vec}(\mathbf{A} \mathbf{X} \mathbf{B}) = (\mathbf{B}^\top \otimes \mathbf{A}) \operatorname{vec} \mathbf{X}"
            }
            VecProductRows => {
                r"\operatorname{vec}(\mathbf{A} \mathbf{X} \mathbf{B}) = (\mathbf{A} \otimes \mathbf{B}^\top) \operatorname{vec} \mathbf{X}"
            }
            VecHadamard => {
                r"\operatorname{vec}(\mathbf{a} \odot \mathbf{X}) = \operatorname{diag}(\operatorname{vec} \mathbf{a}) \operatorname{vec} \mathbf{X}"
            }
            VecTranspose => r"\operatorname{vec}(\mathbf{X}^\top) = \mathbf{K} \operatorname{vec} \mathbf{X}",
            Chain => r"\text{chain rule}",
            Reverse => r"\text{chain rule, backward through the definitions}",
            Reshape => r"\operatorname{vec}^{-1} \text{ to the shape of } \mathbf{X}",
            Symmetric => r"\text{symmetric } \mathbf{X}: (\mathbf{G} + \mathbf{G}^\top)/2",
            HessianOfGradient => r"\text{the Jacobian of the gradient}",
        }
    }

    /// A short stable name, for JSON.
    pub fn name(self) -> String {
        let debug = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }
}

/// Pushes `r` unless it is there already.
fn note(out: &mut Vec<Rule>, r: Rule) {
    if !out.contains(&r) {
        out.push(r);
    }
}

/// The most nodes read when naming rules: a rule list is a summary, and a
/// huge expression gets the rules of its first nodes.
const MAX_READ: usize = 10_000;

/// The rules taking the differential of `e` uses, where `varies` tells
/// which names vary: each operation on the way from the root to a varying
/// name, in the order met.
pub fn differential_rules(e: &Expr, varies: &dyn Fn(&str) -> bool) -> Vec<Rule> {
    let mut memo = std::collections::HashMap::new();
    let mut out = Vec::new();
    // From the outside in, as a textbook reads: each varying node's rule
    // before its children's, each node once.
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if seen.len() > MAX_READ || !seen.insert(x) {
            continue;
        }
        let kids = x.op.children();
        let varying: Vec<bool> = kids.iter().map(|k| varying(k, varies, &mut memo)).collect();
        if varying.iter().any(|&v| v) {
            if let Some(r) = rule_of(x, &varying) {
                note(&mut out, r);
            }
            stack.extend(kids.iter().zip(&varying).filter(|(_, &v)| v).map(|(k, _)| *k).rev());
        }
    }
    out
}

/// Whether a varying name occurs in `e` (memoized by node).
fn varying(e: &Expr, varies: &dyn Fn(&str) -> bool, memo: &mut std::collections::HashMap<*const (), bool>) -> bool {
    let key = std::rc::Rc::as_ptr(&e.0) as *const ();
    if let Some(&v) = memo.get(&key) {
        return v;
    }
    let v = match &e.op {
        Op::Var { name, .. } => varies(name),
        op => op.children().into_iter().any(|k| varying(k, varies, memo)),
    };
    memo.insert(key, v);
    v
}

/// The rule for differentiating `e`'s operation, given which children vary.
fn rule_of(e: &Expr, varying: &[bool]) -> Option<Rule> {
    use Rule::*;
    Some(match &e.op {
        // A number times a matrix is linear, not a product of two values.
        Op::Scale(a, _) if a.as_num().is_some() => return None,
        Op::MatMul(..) | Op::Scale(..) => Product,
        Op::Hadamard(..) => HadamardProduct,
        Op::Kron(..) => KroneckerProduct,
        Op::Div(_, _) | Op::HadamardDiv(..) if varying.get(1) == Some(&true) => Quotient,
        Op::Div(_, _) | Op::HadamardDiv(..) => return None,
        Op::Transpose(_) => Transpose,
        Op::Inverse(_) => Inverse,
        Op::Power(..) if e.shape.is_scalar() => ScalarPower,
        Op::Power(..) => Power,
        Op::HadamardPow(..) => EntrywisePower,
        Op::Trace(_) | Op::Sum(_) | Op::Vec(..) | Op::Unvec(..) | Op::DiagMat(_) | Op::DiagVec(_) => Linear,
        Op::Det(_) => Determinant,
        Op::Logdet(_) => LogDeterminant,
        Op::Norm(_) => Norm,
        Op::Apply(Func::Builtin(Builtin { kind: Kind::Matrix { .. }, .. }), _) => MatrixFunction,
        Op::Apply(..) => Entrywise,
        _ => return None,
    })
}

/// The rules identifying the derivative by `x` from the differential `d`
/// (linear in `dx`) use.
pub fn identification_rules(d: &Expr, x: &str, order: VecOrder) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut read = 0;
    let scalar = d.shape.is_scalar();
    identify_walk(d, x, order, scalar, &mut out, &mut read);
    if scalar {
        note(&mut out, Rule::Identification);
    }
    out
}

/// Adds to `rules` those that writing each differential's terms as
/// `tr(Aᵀ dX)` uses (a scalar turned around, `vec(A X B)` …), as `dL` is
/// printed with its terms collected per name.
pub fn collection_rules(d: &Expr, order: VecOrder, rules: &mut Vec<Rule>) {
    let mut names = Vec::new();
    d.diff_names(&mut names);
    for n in &names {
        for r in identification_rules(d, n, order) {
            if r != Rule::Identification {
                note(rules, r);
            }
        }
    }
}

fn identify_walk(e: &Expr, x: &str, order: VecOrder, scalar: bool, out: &mut Vec<Rule>, read: &mut usize) {
    *read += 1;
    if *read > MAX_READ || !e.mentions_diff(x) {
        return;
    }
    let carries = |k: &Expr| k.mentions_diff(x);
    match &e.op {
        Op::Transpose(_) if scalar => note(out, Rule::ScalarTranspose),
        // A vector's transpose has the same vec.
        Op::Transpose(k) if k.shape.is_vector() => {}
        Op::Transpose(_) => note(out, Rule::VecTranspose),
        Op::MatMul(a, b) => {
            let (f, other) = if carries(a) { (a, b) } else { (b, a) };
            if !other.shape.is_scalar() && !f.shape.is_scalar() && !scalar {
                note(
                    out,
                    match order {
                        VecOrder::Col => Rule::VecProductColumns,
                        VecOrder::Row => Rule::VecProductRows,
                    },
                );
            }
        }
        Op::Hadamard(..) | Op::HadamardDiv(..) if !scalar => note(out, Rule::VecHadamard),
        _ => {}
    }
    for k in e.op.children() {
        identify_walk(k, x, order, scalar, out, read);
    }
}
