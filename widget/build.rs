//! Minifies `src/widget.css` into `$OUT_DIR/widget.min.css`, which the module carries: its
//! comments and indentation are a third of it (about 800 bytes of the brotli'd module). A few
//! lines rather than a CSS crate: the stylesheet is ours, and it uses no construct where
//! whitespace outside quotes matters except between words and values, which stays one space.

use std::error::Error;
use std::path::Path;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=src/widget.css");
    let css = std::fs::read_to_string("src/widget.css")?;
    let out = std::env::var("OUT_DIR")?;
    std::fs::write(Path::new(&out).join("widget.min.css"), minify(&css))?;
    Ok(())
}

/// Drops comments, and whitespace where CSS does not need it: runs of it become one space, and
/// none is kept next to `{`, `}`, `;`, `:` (outside selectors' pseudo-classes, where a space
/// would change the meaning, it is kept), `,` or `>`. Quoted strings are copied as they are.
fn minify(css: &str) -> String {
    let mut out = String::with_capacity(css.len());
    let mut chars = css.chars().peekable();
    let mut space = false;
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' | '\'' => {
                if space && !out.is_empty() && !out.ends_with(['{', '}', ';', ',', '>', ':']) {
                    out.push(' ');
                }
                space = false;
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == c {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => space = true,
            '{' | '}' | ';' | ',' | '>' => {
                if c == '{' {
                    depth += 1;
                } else if c == '}' {
                    depth = depth.saturating_sub(1);
                    if out.ends_with(';') {
                        out.pop();
                    }
                }
                space = false;
                out.push(c);
            }
            // Inside a block a colon separates a property from its value; in a selector (depth
            // 0, or a nested rule's) the space before `:hover` means a descendant.
            ':' if depth > 0 && !selector_ahead(&out) => {
                space = false;
                out.push(c);
            }
            c => {
                if space && !out.is_empty() && !out.ends_with(['{', '}', ';', ',', '>', ':']) {
                    out.push(' ');
                }
                space = false;
                out.push(c);
            }
        }
    }
    out
}

/// Whether the text since the last `{`, `}` or `;` is a nested selector (inside `@media`)
/// rather than a property name: a property name is one word of letters and dashes.
fn selector_ahead(out: &str) -> bool {
    let start = out.rfind(['{', '}', ';']).map_or(0, |i| i + 1);
    !out[start..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}
