//! The conventions a derivative is written under: the layout of Jacobians
//! and the order in which `vec` stacks entries.
//!
//! Identification computes every Jacobian in numerator layout
//! (`∂vec(F)/∂vec(X)ᵀ`, one row per entry of `F`); [`Conventions::present`]
//! turns it into the layout the user asked for, and
//! [`Conventions::unpresent`] back. An answer keeps the conventions it was
//! derived under, so printing, checking and code generation never read the
//! session's settings of the moment.

pub use crate::ir::VecOrder;
use crate::ir::{self, Expr};

/// Which way a Jacobian is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `∂y/∂xᵀ` has one row per entry of `x` (the default).
    #[default]
    Denominator,
    /// `∂y/∂xᵀ` has one row per entry of `y` (Magnus & Neudecker).
    Numerator,
}

impl Layout {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Denominator => "denominator",
            Layout::Numerator => "numerator",
        }
    }
}

impl VecOrder {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            VecOrder::Row => "row",
            VecOrder::Col => "col",
        }
    }
}

/// Layout and `vec` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conventions {
    /// Jacobian layout.
    pub layout: Layout,
    /// `vec` order.
    pub order: VecOrder,
}

impl Conventions {
    /// A Jacobian computed in numerator layout, in this layout.
    ///
    /// ```
    /// use matdiff::conventions::{Conventions, Layout};
    /// use matdiff::{ir, shape::{Dim, Shape}};
    /// let j = ir::var("J", Shape::new(Dim::num(2), Dim::num(3)), false);
    /// let denominator = Conventions::default();
    /// assert_eq!(denominator.present(j.clone()).shape.to_string(), "3×2");
    /// assert_eq!(denominator.unpresent(denominator.present(j.clone())), j);
    /// ```
    pub fn present(self, numerator: Expr) -> Expr {
        match self.layout {
            Layout::Denominator => ir::transpose(numerator),
            Layout::Numerator => numerator,
        }
    }

    /// A Jacobian in this layout, in numerator layout.
    pub fn unpresent(self, presented: Expr) -> Expr {
        self.present(presented)
    }

    /// Whether chain formulas read inner to outer (`∂d2/∂w ∂n2/∂d2ᵀ ∂L/∂n2ᵀ`).
    pub fn inner_first(self) -> bool {
        self.layout == Layout::Denominator
    }
}
