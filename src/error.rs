//! Errors and source spans.
//!
//! Every stage returns [`Error`](enum@Error); rendering (with the offending text underlined)
//! happens once, in [`Error::render`], apart from where the error is raised.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
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
#[derive(Debug, Clone, Error, PartialEq)]
pub enum Error {
    /// The text does not follow the grammar.
    #[error("syntax error: {message}")]
    Syntax {
        /// What was expected.
        message: String,
        /// Where.
        span: Span,
        /// The label under the offending text.
        label: String,
        /// A suggested fix.
        help: Option<String>,
    },
    /// A name that is neither declared nor defined, or a misuse of a name.
    #[error("{message}")]
    Name {
        /// What is wrong.
        message: String,
        /// Where.
        span: Span,
        /// The label under the offending text.
        label: String,
        /// A suggested fix.
        help: Option<String>,
    },
    /// Two shapes that had to agree do not.
    #[error("{message}")]
    Shape {
        /// Which shapes disagree.
        message: String,
        /// Where.
        span: Span,
        /// The label under the offending text.
        label: String,
        /// A suggested fix.
        help: Option<String>,
        /// The operands, each with its shape; when present they are labelled
        /// instead of the whole span.
        parts: Vec<(Span, String)>,
    },
    /// A well-formed request that cannot be answered (e.g. a derivative with
    /// respect to something that is not a declared matrix).
    #[error("{message}")]
    Unsupported {
        /// What cannot be done.
        message: String,
        /// Where.
        span: Span,
    },
    /// The input exceeds a limit that keeps matdiff fast and safe.
    #[error("{message}")]
    Limit {
        /// Which limit.
        message: String,
        /// Where.
        span: Span,
    },
    /// A numeric check failed or could not run.
    #[error("{message}")]
    Check {
        /// What failed.
        message: String,
        /// The query.
        span: Span,
    },
}

impl Diagnostic for Error {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(match self {
            Error::Syntax { .. } => "matdiff::syntax",
            Error::Name { .. } => "matdiff::name",
            Error::Shape { .. } => "matdiff::shape",
            Error::Unsupported { .. } => "matdiff::unsupported",
            Error::Limit { .. } => "matdiff::limit",
            Error::Check { .. } => "matdiff::check",
        }))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        match self {
            Error::Syntax { help, .. } | Error::Name { help, .. } | Error::Shape { help, .. } => {
                help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
            }
            _ => None,
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let label = |span: Span, text: &str| LabeledSpan::new_with_span(Some(text.to_string()), span);
        let labels: Vec<LabeledSpan> = match self {
            Error::Shape { parts, .. } if !parts.is_empty() => parts.iter().map(|(s, t)| label(*s, t)).collect(),
            Error::Syntax { span, label: text, .. }
            | Error::Name { span, label: text, .. }
            | Error::Shape { span, label: text, .. } => vec![label(*span, text)],
            Error::Unsupported { span, .. } | Error::Limit { span, .. } => vec![label(*span, "here")],
            Error::Check { span, .. } => vec![label(*span, "this query")],
        };
        Some(Box::new(labels.into_iter()))
    }
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

    /// The same error with every span moved by `f`.
    pub(crate) fn map_spans(&self, f: &dyn Fn(Span) -> Span) -> Error {
        let mut e = self.clone();
        match &mut e {
            Error::Shape { span, parts, .. } => {
                *span = f(*span);
                for (s, _) in parts {
                    *s = f(*s);
                }
            }
            Error::Syntax { span, .. }
            | Error::Name { span, .. }
            | Error::Unsupported { span, .. }
            | Error::Limit { span, .. }
            | Error::Check { span, .. } => *span = f(*span),
        }
        e
    }

    pub(crate) fn syntax(span: Span, message: impl Into<String>, label: impl Into<String>) -> Error {
        Error::Syntax { message: message.into(), span, label: label.into(), help: None }
    }

    pub(crate) fn name(span: Span, message: impl Into<String>, label: impl Into<String>) -> Error {
        Error::Name { message: message.into(), span, label: label.into(), help: None }
    }

    pub(crate) fn shape(span: Span, message: impl Into<String>, label: impl Into<String>) -> Error {
        Error::Shape { message: message.into(), span, label: label.into(), help: None, parts: Vec::new() }
    }

    pub(crate) fn unsupported(span: Span, message: impl Into<String>) -> Error {
        Error::Unsupported { message: message.into(), span }
    }

    pub(crate) fn limit(span: Span, message: impl Into<String>) -> Error {
        Error::Limit { message: message.into(), span }
    }

    /// Adds a suggested fix to a syntax, name or shape error.
    pub(crate) fn with_help(mut self, text: impl Into<String>) -> Error {
        if let Error::Syntax { help, .. } | Error::Name { help, .. } | Error::Shape { help, .. } = &mut self {
            *help = Some(text.into());
        }
        self
    }

    /// Labels the operands of a shape error, each with its own text.
    pub(crate) fn with_parts(mut self, labels: Vec<(Span, String)>) -> Error {
        if let Error::Shape { parts, .. } = &mut self {
            *parts = labels;
        }
        self
    }

    /// Renders the error as plain text (no colour): the message with
    /// `file:line:column`, the offending line with the span underlined, and any help.
    ///
    /// Only the lines around the error are shown, and a long line only around
    /// the offending text, so a huge input gives a short message.
    pub fn render(&self, file: &str, src: &str) -> String {
        let (line, col) = self.span().line_col(src);
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_links(false)
            .without_primary_span_start();
        let (shown, map) = Excerpt::new(src, self.span());
        let floor = |o: usize| floor_char_boundary(src, o.min(src.len()));
        let moved = self.map_spans(&|s| map.span(Span::new(floor(s.start), floor(s.end))));
        let report =
            miette::Report::new(moved).with_source_code(NamedSource::new(format!("{file}:{line}:{col}"), shown));
        let mut out = String::new();
        if handler.render_report(&mut out, report.as_ref()).is_err() {
            out = format!("error: {self}\n");
        }
        format!("error at {file}:{line}:{col}: {self}\n{out}")
    }
}

/// Longest line shown whole in a message, in characters.
const SHOWN_LINE: usize = 120;
/// Characters shown before the offending text on a longer line.
const SHOWN_BEFORE: usize = 40;
/// Characters shown of a longer line.
const SHOWN_WIDTH: usize = 100;

/// The text shown in a message: the offending line and its neighbours, each
/// cut to a window if long; the other lines are left empty so that line
/// numbers stay right. Maps spans of the source into it.
struct Excerpt {
    /// Byte range of the focus line in the source (without its newline).
    line: (usize, usize),
    /// Where the focus line starts in the excerpt.
    start: usize,
    /// Byte offsets in the source of the shown part of the focus line.
    window: (usize, usize),
    /// Length of the `…` before the window, in bytes (0 if none).
    prefix: usize,
}

impl Excerpt {
    fn new(src: &str, focus: Span) -> (String, Excerpt) {
        let at = floor_char_boundary(src, focus.start.min(src.len()));
        let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[at..].find('\n').map_or(src.len(), |i| at + i);
        let focus_line = src[..line_start].matches('\n').count();
        let text = &src[line_start..line_end];
        let (window, prefix) = if text.chars().count() <= SHOWN_LINE {
            ((line_start, line_end), 0)
        } else {
            let before: Vec<(usize, char)> = src[line_start..at].char_indices().collect();
            let from = if before.len() > SHOWN_BEFORE {
                line_start + before[before.len() - SHOWN_BEFORE].0
            } else {
                line_start
            };
            let to = src[from..line_end].char_indices().nth(SHOWN_WIDTH).map_or(line_end, |(i, _)| from + i);
            ((from, to), if from > line_start { '…'.len_utf8() } else { 0 })
        };
        let mut shown = String::with_capacity(src.len().min(1 << 16));
        let mut start = 0;
        for (i, l) in src.split('\n').enumerate() {
            if i > 0 {
                shown.push('\n');
            }
            if i == focus_line {
                start = shown.len();
                if prefix > 0 {
                    shown.push('…');
                }
                shown.push_str(&src[window.0..window.1]);
                if window.1 < line_end {
                    shown.push('…');
                }
            } else if i + 1 == focus_line || i == focus_line + 1 {
                let cut = l.char_indices().nth(SHOWN_WIDTH).map_or(l.len(), |(j, _)| j);
                shown.push_str(&l[..cut]);
                if cut < l.len() {
                    shown.push('…');
                }
            }
        }
        // A caret at the very end needs a character to stand under.
        if at >= src.len() {
            shown.push(' ');
        }
        (shown, Excerpt { line: (line_start, line_end), start, window, prefix })
    }

    /// Where a source offset lands in the excerpt (clamped to the focus line).
    fn offset(&self, o: usize) -> usize {
        let o = o.clamp(self.line.0, self.line.1 + 1);
        if o > self.line.1 {
            // Past the end of the line: the newline (or the added space).
            return self.start
                + self.prefix
                + (self.window.1 - self.window.0)
                + usize::from(self.window.1 < self.line.1) * '…'.len_utf8();
        }
        let o = o.clamp(self.window.0, self.window.1);
        self.start + self.prefix + (o - self.window.0)
    }

    fn span(&self, s: Span) -> Span {
        let start = self.offset(s.start);
        let end = self.offset(s.end.max(s.start)).max(start);
        Span::new(start, end)
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn render(span: Span, src: &str) -> String {
        Error::syntax(span, "bad", "here").render("f", src)
    }

    #[test]
    fn a_caret_at_the_very_end_is_shown() {
        let out = render(Span::new(5, 5), "A + (");
        assert!(out.starts_with("error at f:1:6: syntax error: bad"), "{out}");
        assert!(out.contains('▲') || out.contains('┬'), "{out}");
    }

    #[test]
    fn a_long_line_is_shown_around_the_error_only() {
        let src = format!("A: 2 x 2\n{}$ A", "A + ".repeat(250_000));
        let at = src.find('$').unwrap();
        let out = render(Span::new(at, at + 1), &src);
        assert!(out.len() < 2_000, "{} bytes:\n{out}", out.len());
        assert!(out.contains("…A + A + "), "{out}");
        assert!(out.contains("$ A"), "{out}");
        assert!(out.starts_with(&format!("error at f:2:{}:", 1_000_001)), "{out}");
    }

    #[test]
    fn far_lines_are_left_out() {
        let src = format!("{}x\n{}", "A\n".repeat(10_000), "B\n".repeat(10_000));
        let at = src.find('x').unwrap();
        let out = render(Span::new(at, at + 1), &src);
        assert!(out.contains("10001 │ x"), "{out}");
        assert!(out.len() < 1_000, "{out}");
    }

    #[test]
    fn spans_in_multibyte_text_stay_on_character_boundaries() {
        let src = "∂L/∂ ‖x‖ ∘ σ(y)";
        for start in 0..=src.len() {
            for end in start..=src.len() {
                let _ = render(Span::new(start, end), src);
            }
        }
    }
}
