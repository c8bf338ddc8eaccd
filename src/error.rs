//! Errors and source spans.
//!
//! Every stage returns [`Error`]; rendering (with the offending text underlined)
//! happens once, in [`Error::render`], apart from where the error is raised.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};
use thiserror::Error;

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end` (byte offsets).
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// 1-based line and column of the span's start in `src`.
    pub fn line_col(self, src: &str) -> (usize, usize) {
        let start = self.start.min(src.len());
        let before = &src[..floor_char_boundary(src, start)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl From<Span> for SourceSpan {
    fn from(s: Span) -> SourceSpan {
        (s.start, s.end.saturating_sub(s.start)).into()
    }
}

/// What went wrong, and where.
#[derive(Debug, Clone, Error, Diagnostic, PartialEq)]
pub enum Error {
    /// The text does not follow the grammar.
    #[error("syntax error: {message}")]
    #[diagnostic(code(matdiff::syntax))]
    Syntax {
        /// What was expected.
        message: String,
        /// Where.
        #[label("{label}")]
        span: Span,
        /// The label under the offending text.
        label: String,
    },
    /// A name that is neither declared nor defined, or a misuse of a name.
    #[error("{message}")]
    #[diagnostic(code(matdiff::name))]
    Name {
        /// What is wrong.
        message: String,
        /// Where.
        #[label("{label}")]
        span: Span,
        /// The label under the offending text.
        label: String,
        /// A suggested fix.
        #[help]
        help: Option<String>,
    },
    /// Two shapes that had to agree do not.
    #[error("{message}")]
    #[diagnostic(code(matdiff::shape))]
    Shape {
        /// Which shapes disagree.
        message: String,
        /// Where.
        #[label("{label}")]
        span: Span,
        /// The label under the offending text.
        label: String,
        /// A suggested fix.
        #[help]
        help: Option<String>,
    },
    /// A well-formed request that cannot be answered (e.g. a derivative with
    /// respect to something that is not a declared matrix).
    #[error("{message}")]
    #[diagnostic(code(matdiff::unsupported))]
    Unsupported {
        /// What cannot be done.
        message: String,
        /// Where.
        #[label("here")]
        span: Span,
    },
    /// The input exceeds a limit that keeps matdiff fast and safe.
    #[error("{message}")]
    #[diagnostic(code(matdiff::limit))]
    Limit {
        /// Which limit.
        message: String,
        /// Where.
        #[label("here")]
        span: Span,
    },
    /// A numeric check failed or could not run.
    #[error("{message}")]
    #[diagnostic(code(matdiff::check))]
    Check {
        /// What failed.
        message: String,
        /// The query.
        #[label("this query")]
        span: Span,
    },
}

impl Error {
    /// The span the error points at.
    pub fn span(&self) -> Span {
        match self {
            Error::Syntax { span, .. }
            | Error::Name { span, .. }
            | Error::Shape { span, .. }
            | Error::Unsupported { span, .. }
            | Error::Limit { span, .. }
            | Error::Check { span, .. } => *span,
        }
    }

    pub(crate) fn name(span: Span, message: impl Into<String>, label: impl Into<String>) -> Error {
        Error::Name {
            message: message.into(),
            span,
            label: label.into(),
            help: None,
        }
    }

    pub(crate) fn shape(span: Span, message: impl Into<String>, label: impl Into<String>) -> Error {
        Error::Shape {
            message: message.into(),
            span,
            label: label.into(),
            help: None,
        }
    }

    pub(crate) fn unsupported(span: Span, message: impl Into<String>) -> Error {
        Error::Unsupported {
            message: message.into(),
            span,
        }
    }

    pub(crate) fn limit(span: Span, message: impl Into<String>) -> Error {
        Error::Limit {
            message: message.into(),
            span,
        }
    }

    /// Adds a suggested fix to a name or shape error.
    pub(crate) fn with_help(mut self, text: impl Into<String>) -> Error {
        if let Error::Name { help, .. } | Error::Shape { help, .. } = &mut self {
            *help = Some(text.into());
        }
        self
    }

    /// Renders the error as plain text (no colour): the message with
    /// `file:line:column`, the offending line with the span underlined, and any help.
    pub fn render(&self, file: &str, src: &str) -> String {
        let (line, col) = self.span().line_col(src);
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_links(false);
        let report = miette::Report::new(self.clone()).with_source_code(NamedSource::new(
            format!("{file}:{line}:{col}"),
            src.to_string(),
        ));
        let mut out = String::new();
        if handler.render_report(&mut out, report.as_ref()).is_err() {
            out = format!("error: {self}\n");
        }
        format!("error at {file}:{line}:{col}: {self}\n{out}")
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
