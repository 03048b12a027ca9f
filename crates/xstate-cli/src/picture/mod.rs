//! Pictures people can read: SVG drawings of layouts and a self-contained HTML page of a fleet.
//! Everything is written as text here, with no network, fonts or scripts from elsewhere.

pub mod layout;
pub mod matrix;

use std::fmt::Write as _;

/// `s` with `&`, `<`, `>`, `"` and `'` escaped, for XML/HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The fill colour of a component (by its policy feature group), so a component has one
/// colour in every picture.
pub fn colour(index: u8) -> &'static str {
    match index {
        0 => "#95a5a6",
        1 => "#7fb3d5",
        2 => "#2e86c1",
        3 | 4 => "#a569bd",
        5 => "#f0b27a",
        6 => "#e67e22",
        7 => "#ca6f1e",
        9 => "#27ae60",
        17 => "#ec7063",
        18 => "#c0392b",
        19 => "#16a085",
        62 => "#d4ac0d",
        8 | 10 | 13 | 14 | 15 | 16 => "#5d6d7e",
        11 | 12 => "#8e44ad",
        _ => "#bdc3c7",
    }
}

/// Appends formatted text to a `String`.
macro_rules! put {
    ($out:expr, $($t:tt)*) => {{ let _ = write!($out, $($t)*); }};
}
pub(crate) use put;

/// The `<defs>` every picture shares: the hatching of holes and padding.
pub fn defs() -> String {
    let mut o = String::new();
    put!(
        o,
        "<defs><pattern id=\"hole\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fdedec\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#e74c3c\" stroke-width=\"2\"/></pattern>\
         <pattern id=\"pad\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\">\
         <rect width=\"4\" height=\"4\" fill=\"#f4f6f6\"/><circle cx=\"2\" cy=\"2\" r=\"0.8\" fill=\"#99a3a4\"/>\
         </pattern></defs>"
    );
    o
}

/// A CSS block for the HTML pages.
pub const CSS: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:24px;color:#17202a;max-width:1400px}\
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d5d8dc}\
p.answer{font-size:15px;background:#eaf2f8;padding:8px 12px;border-left:4px solid #2e86c1}\
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #d5d8dc;padding:2px 6px;text-align:left}\
th{background:#f2f3f4}code{font-size:12px;background:#f4f6f6;padding:0 3px}\
.note{color:#566573;font-size:12px}svg{display:block;margin:6px 0}";
