//! Python names for what generated code refers to, and sizes as Python
//! integer expressions. Every backend writes Python, so these are shared:
//! a query's function has the same parameter names in every backend.

use crate::shape::Dim;
use crate::typeck::{Binding, Env};
use std::collections::{BTreeSet, HashMap, HashSet};

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "case", "class", "continue", "def",
    "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "match",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "type", "while", "with", "yield", "_",
];

/// The module aliases that the code of any backend refers to (`np`, `jnp`,
/// `jax`, `torch`), which
/// user names therefore avoid. There is one list for all backends, so that
/// every backend gives a function the same parameter names; a backend whose
/// code names another module adds its alias here (see
/// [`Backend::reserved`](super::Backend::reserved)).
pub const RESERVED: &[&str] = &["np", "jnp", "jax", "torch"];

const GREEK: &[(char, &str)] = &[
    ('α', "alpha"),
    ('β', "beta"),
    ('γ', "gamma"),
    ('δ', "delta"),
    ('ε', "epsilon"),
    ('ζ', "zeta"),
    ('η', "eta"),
    ('θ', "theta"),
    ('ι', "iota"),
    ('κ', "kappa"),
    ('λ', "lam"),
    ('μ', "mu"),
    ('ν', "nu"),
    ('ξ', "xi"),
    ('ο', "omicron"),
    ('π', "pi"),
    ('ρ', "rho"),
    ('ς', "varsigma"),
    ('σ', "sigma"),
    ('τ', "tau"),
    ('υ', "upsilon"),
    ('φ', "phi"),
    ('χ', "chi"),
    ('ψ', "psi"),
    ('ω', "omega"),
    ('Α', "Alpha"),
    ('Β', "Beta"),
    ('Γ', "Gamma"),
    ('Δ', "Delta"),
    ('Ε', "Epsilon"),
    ('Ζ', "Zeta"),
    ('Η', "Eta"),
    ('Θ', "Theta"),
    ('Ι', "Iota"),
    ('Κ', "Kappa"),
    ('Λ', "Lambda"),
    ('Μ', "Mu"),
    ('Ν', "Nu"),
    ('Ξ', "Xi"),
    ('Ο', "Omicron"),
    ('Π', "Pi"),
    ('Ρ', "Rho"),
    ('Σ', "Sigma"),
    ('Τ', "Tau"),
    ('Υ', "Upsilon"),
    ('Φ', "Phi"),
    ('Χ', "Chi"),
    ('Ψ', "Psi"),
    ('Ω', "Omega"),
];

/// An ASCII spelling of any text: letters, digits and `_` are kept, Greek
/// letters spelled out, superscript and subscript digits made digits, and
/// anything else becomes `_` (runs of `_` collapse, none at the ends).
/// The result may still be empty, start with a digit or be a keyword.
pub fn ascii(text: &str) -> String {
    const SUP: &str = "⁰¹²³⁴⁵⁶⁷⁸⁹";
    const SUB: &str = "₀₁₂₃₄₅₆₇₈₉";
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if let Some((_, g)) = GREEK.iter().find(|(g, _)| *g == c) {
            out.push_str(g);
        } else if let Some(i) = SUP.chars().position(|d| d == c).or_else(|| SUB.chars().position(|d| d == c)) {
            out.push(char::from(b'0' + i as u8));
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut s = String::new();
    for c in out.chars() {
        if !(c == '_' && s.ends_with('_')) {
            s.push(c);
        }
    }
    s.trim_matches('_').to_string()
}

/// A valid Python identifier from any text: [`ascii`], then `x` if it is
/// empty or starts with a digit, and `_` after a keyword or a name of
/// [`RESERVED`] (`np`, `torch`, …).
pub fn identifier(text: &str) -> String {
    let mut s = ascii(text);
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'x');
    }
    if KEYWORDS.contains(&s.as_str()) || RESERVED.contains(&s.as_str()) {
        s.push('_');
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// A declared matrix, a defined name or a declared function.
    Name,
    /// `d_X`.
    Diff,
    /// `f_prime`, `f_prime2`, … (k ≥ 1).
    Derivative(u32),
    /// A symbolic size.
    Size,
}

/// The Python identifier of every user name, differential, function
/// derivative and size, all distinct.
///
/// Names that are already ASCII identifiers keep their spelling; then sizes
/// that are; then `f_prime`-style and `d_X`-style names; then the rest
/// (Greek names, keywords). A name whose spelling is taken gets the first
/// free `name_2`, `name_3`, … in that order, so the assignment is the same
/// for every function of a module.
#[derive(Debug, Clone, Default)]
pub struct Identifiers {
    map: HashMap<(Kind, String), String>,
    taken: HashSet<String>,
}

impl Identifiers {
    /// The identifiers for the names and sizes of `env`.
    pub fn new(env: &Env) -> Identifiers {
        Identifiers::with_sizes(env, std::iter::empty())
    }

    /// The identifiers for `env` and some more sizes (found in answers).
    pub fn with_sizes(env: &Env, extra: impl IntoIterator<Item = String>) -> Identifiers {
        let mut wanted: Vec<(u8, Kind, String, String)> = Vec::new();
        let plain = |name: &str, candidate: &str| name == candidate;
        let mut sizes: BTreeSet<String> = extra.into_iter().collect();
        for (name, (b, _)) in &env.names {
            // An adjoint `δX` reads `delta_X`, as in ASCII text.
            let base = match name.strip_prefix('δ').filter(|r| r.starts_with(|c: char| c.is_alphabetic())) {
                Some(rest) => format!("delta_{}", ascii(rest)),
                None => identifier(name),
            };
            let first = if plain(name, &base) { 0 } else { 3 };
            wanted.push((first, Kind::Name, name.clone(), base.clone()));
            match b {
                Binding::Matrix { shape, .. } => {
                    wanted.push((2, Kind::Diff, name.clone(), format!("d_{base}")));
                    sizes.extend(shape.rows.symbols().chain(shape.cols.symbols()).map(String::from));
                }
                Binding::Def { body, .. } => {
                    sizes.extend(body.shape.rows.symbols().chain(body.shape.cols.symbols()).map(String::from));
                }
                Binding::Func => {
                    for k in 1..=4 {
                        let suffix = if k == 1 { String::new() } else { k.to_string() };
                        wanted.push((2, Kind::Derivative(k), name.clone(), format!("{base}_prime{suffix}")));
                    }
                }
            }
        }
        for s in sizes {
            let base = identifier(&s);
            let first = if plain(&s, &base) { 1 } else { 3 };
            wanted.push((first, Kind::Size, s, base));
        }
        wanted.sort();
        let mut ids = Identifiers::default();
        for (_, kind, name, base) in wanted {
            let id = ids.claim(&base);
            ids.map.insert((kind, name), id);
        }
        ids
    }

    fn claim(&mut self, base: &str) -> String {
        let mut id = base.to_string();
        let mut k = 2;
        while self.taken.contains(&id) {
            id = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(id.clone());
        id
    }

    fn get(&self, kind: Kind, name: &str, fallback: impl FnOnce() -> String) -> String {
        self.map.get(&(kind, name.to_string())).cloned().unwrap_or_else(fallback)
    }

    /// A declared matrix, defined name or declared function.
    pub fn name(&self, name: &str) -> String {
        self.get(Kind::Name, name, || identifier(name))
    }

    /// The differential `dX` of a declared matrix, as a parameter.
    pub fn diff(&self, name: &str) -> String {
        self.get(Kind::Diff, name, || format!("d_{}", identifier(name)))
    }

    /// The `k`-th derivative of a declared function (`k = 0` is the function).
    pub fn func(&self, name: &str, k: u32) -> String {
        match k {
            0 => self.name(name),
            _ => self.get(Kind::Derivative(k), name, || {
                let suffix = if k == 1 { String::new() } else { k.to_string() };
                format!("{}_prime{suffix}", identifier(name))
            }),
        }
    }

    /// A symbolic size.
    pub fn size(&self, sym: &str) -> String {
        self.get(Kind::Size, sym, || identifier(sym))
    }
}

/// A size as a Python expression: `3`, `n`, `2 * n * m`, given the Python
/// name of each symbol. This is the one place sizes become code.
pub fn size_expr(d: &Dim, name: &dyn Fn(&str) -> String) -> String {
    let (coef, syms) = dim_parts(d);
    let mut parts: Vec<String> = Vec::new();
    if coef != 1 || syms.is_empty() {
        parts.push(coef.to_string());
    }
    parts.extend(syms.iter().map(|s| name(s)));
    parts.join(" * ")
}

/// A size as its numeric coefficient and its symbols, with repetition
/// (`2·n·n` is `(2, [n, n])`), read without going through its text.
pub(super) fn dim_parts(d: &Dim) -> (u64, Vec<String>) {
    let syms: Vec<String> = d.symbols().map(String::from).collect();
    let ones: HashMap<String, usize> = syms.iter().map(|s| (s.clone(), 1)).collect();
    // Only an unsolved inference variable makes this fail; typing leaves none.
    let coef = d.eval(&ones).unwrap_or(1) as u64;
    (coef, syms)
}
