//! A layout to scale: one CPU's standard and compacted XSAVE images as rows of labelled blocks
//! (offset and size), holes of the standard format hatched as holes, padding of the compacted
//! format dotted, supervisor components in the compacted row only (they have no standard
//! offset: SDM Vol. 1 §13.4.3); and two CPUs one above the other with the components that move
//! linked.

use xstate::component::legacy::{EXTENDED_OFFSET, HEADER_OFFSET, LEGACY_SIZE};
use xstate::{Component, Layout, Xfeatures};

use super::{colour, defs, esc, put};
use std::fmt::Write as _;

/// One CPU to draw: its layout, and the XCR0 / IA32_XSS the compacted row is laid out for
/// (components outside XCR0 are drawn faded in the standard row).
pub struct Panel<'a> {
    /// How to name it.
    pub name: &'a str,
    /// The layout.
    pub layout: &'a Layout,
    /// XCR0.
    pub xcr0: Xfeatures,
    /// IA32_XSS.
    pub xss: Xfeatures,
    /// Components the CPU enumerates whose CPUID 0xD subleaf its source lacks: not drawn, and
    /// said so, never shown as absent.
    pub omitted: Xfeatures,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Legacy,
    Component { enabled: bool },
    Hole,
    Pad,
}

struct Block {
    start: u32,
    end: u32,
    kind: Kind,
    component: Option<Component>,
    label: String,
    title: String,
}

/// Which of the two rows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// The standard format (XSAVE, XRSTOR).
    Standard,
    /// The compacted format (XSAVEC, XSAVES) for XCOMP_BV = XCR0 | XSS.
    Compacted,
}

impl Row {
    fn key(self) -> &'static str {
        match self {
            Row::Standard => "standard",
            Row::Compacted => "compacted",
        }
    }
}

fn legacy_blocks(l: &Layout) -> Vec<Block> {
    let b = |start: u32, end: u32, label: &str, title: &str, c: Option<Component>| Block {
        start,
        end,
        kind: if c.is_some() { Kind::Component { enabled: true } } else { Kind::Legacy },
        component: c,
        label: label.into(),
        title: title.into(),
    };
    let mut v =
        vec![b(0, 160, "x87", "x87 (0): FPU registers, bytes 0..160 of the legacy region", Some(Component::X87))];
    if l.user_supported().contains(Component::SSE) {
        v.push(b(160, 416, "sse", "sse (1): XMM registers 160..416 (MXCSR at 24)", Some(Component::SSE)));
    }
    v.push(b(416, LEGACY_SIZE as u32, "", "legacy region 416..512: reserved, and 464..512 for software", None));
    v.push(b(HEADER_OFFSET as u32, EXTENDED_OFFSET as u32, "hdr", "XSAVE header 512..576: XSTATE_BV, XCOMP_BV", None));
    v
}

fn standard_blocks(p: &Panel<'_>) -> Vec<Block> {
    let l = p.layout;
    let mut v = legacy_blocks(l);
    for &c in l.standard_order() {
        let g = l.geometry(c).unwrap_or_default();
        let enabled = p.xcr0.contains(c);
        v.push(Block {
            start: g.offset,
            end: g.offset + g.size,
            kind: Kind::Component { enabled },
            component: Some(c),
            label: l.name(c),
            title: format!(
                "{} ({}): standard offset {:#x}, {} bytes{}",
                l.name(c),
                c.index(),
                g.offset,
                g.size,
                if enabled { "" } else { ", not in XCR0" }
            ),
        });
    }
    for h in l.holes(l.user_supported()).unwrap_or_default() {
        v.push(Block {
            start: h.start,
            end: h.end,
            kind: Kind::Hole,
            component: None,
            label: "hole".into(),
            title: format!(
                "hole {:#x}..{:#x} ({} bytes): no component of this CPU lives here",
                h.start,
                h.end,
                h.end - h.start
            ),
        });
    }
    v
}

fn compacted_blocks(p: &Panel<'_>) -> Option<Vec<Block>> {
    let l = p.layout;
    if !l.features().compaction() {
        return None;
    }
    let xcomp = (p.xcr0 | p.xss) & l.supported();
    let mut v = legacy_blocks(l);
    let mut at = EXTENDED_OFFSET as u32;
    for (c, off, size) in l.compacted_components(xcomp).unwrap_or_default() {
        if off > at {
            v.push(Block {
                start: at,
                end: off,
                kind: Kind::Pad,
                component: None,
                label: String::new(),
                title: format!("padding {at:#x}..{off:#x}: {} is 64-byte aligned", l.name(c)),
            });
        }
        let g = l.geometry(c).unwrap_or_default();
        v.push(Block {
            start: off,
            end: off + size,
            kind: Kind::Component { enabled: true },
            component: Some(c),
            label: l.name(c),
            title: format!(
                "{} ({}): compacted offset {off:#x}, {size} bytes{}{}",
                l.name(c),
                c.index(),
                if g.supervisor { ", supervisor (IA32_XSS)" } else { "" },
                if g.align64 { ", 64-byte aligned" } else { "" }
            ),
        });
        at = off + size;
    }
    Some(v)
}

const LEFT: f64 = 170.0;
const WIDTH: f64 = 1000.0;
const ROW_H: f64 = 34.0;
const LANE_H: f64 = 13.0;
const CHAR_W: f64 = 6.3;

struct Scale {
    bytes: f64,
}

impl Scale {
    fn x(&self, b: u32) -> f64 {
        LEFT + WIDTH * f64::from(b) / self.bytes
    }
}

/// Label lanes: the blocks whose label does not fit inside them, each given a lane so that no
/// two labels in a lane overlap. Returns (block index, lane, text, x) and the lane count.
fn lanes(blocks: &[Block], s: &Scale) -> (Vec<(usize, usize, String, f64)>, usize) {
    let mut out = Vec::new();
    let mut ends: Vec<f64> = Vec::new();
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&i| blocks[i].start);
    for i in order {
        let b = &blocks[i];
        if b.label.is_empty() || matches!(b.kind, Kind::Legacy) {
            continue;
        }
        let w = s.x(b.end) - s.x(b.start);
        if (b.label.len() as f64) * CHAR_W + 6.0 <= w {
            continue;
        }
        let text = format!("{} {:#x}+{}", b.label, b.start, b.end - b.start);
        let tw = text.len() as f64 * CHAR_W;
        let x = (s.x(b.start) + s.x(b.end)) / 2.0;
        let x0 = x.max(LEFT).min(LEFT + WIDTH + 16.0 - tw);
        let lane = match ends.iter().position(|&e| e + 4.0 < x0) {
            Some(k) => k,
            None => {
                ends.push(f64::MIN);
                ends.len() - 1
            }
        };
        ends[lane] = x0 + tw;
        out.push((i, lane, text, x0));
    }
    (out, ends.len())
}

/// Draws one row at `y` (top of the blocks) with its label lanes above or below; returns the
/// x extents of each component block and the height used by the lanes.
fn draw_row(
    o: &mut String,
    blocks: &[Block],
    s: &Scale,
    y: f64,
    row: Row,
    label: &str,
    lanes_above: bool,
) -> (Vec<(Component, f64, f64)>, f64) {
    put!(
        o,
        "<text x=\"8\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\"><title>{}</title>{}</text>",
        y + 14.0,
        esc(label),
        esc(&short(label))
    );
    put!(o, "<text x=\"8\" y=\"{:.1}\" font-size=\"11\" fill=\"#566573\">{}</text>", y + 28.0, row.key());
    let mut extents = Vec::new();
    for b in blocks {
        let x0 = s.x(b.start);
        let w = (s.x(b.end) - x0).max(1.5);
        let (class, fill, extra) = match b.kind {
            Kind::Legacy => ("legacy", "#e5e8e8".to_string(), String::new()),
            Kind::Hole => ("hole", "url(#hole)".to_string(), String::new()),
            Kind::Pad => ("pad", "url(#pad)".to_string(), String::new()),
            Kind::Component { enabled } => (
                "component",
                colour(b.component.map_or(99, |c| c.index())).to_string(),
                if enabled { String::new() } else { " fill-opacity=\"0.3\" stroke-dasharray=\"3 2\"".to_string() },
            ),
        };
        let mut data = format!(" data-row=\"{}\" data-start=\"{:#x}\" data-end=\"{:#x}\"", row.key(), b.start, b.end);
        if let Some(c) = b.component {
            put!(data, " data-component=\"{}\"", esc(&c.name().to_string()));
            extents.push((c, x0, x0 + w));
        }
        put!(
            o,
            "<rect class=\"{class}\"{data} x=\"{x0:.2}\" y=\"{y:.1}\" width=\"{w:.2}\" height=\"{ROW_H}\" fill=\"{fill}\" \
             stroke=\"#34495e\" stroke-width=\"0.6\"{extra}><title>{}</title></rect>",
            esc(&b.title)
        );
        let text_w = b.label.len() as f64 * CHAR_W + 6.0;
        if !b.label.is_empty() && text_w <= w {
            let cx = x0 + w / 2.0;
            let size = format!("{:#x}+{}", b.start, b.end - b.start);
            let two = (size.len() as f64) * CHAR_W * 0.9 + 6.0 <= w && !matches!(b.kind, Kind::Legacy);
            let ty = if two { y + 14.0 } else { y + 21.0 };
            put!(
                o,
                "<text x=\"{cx:.1}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"middle\" pointer-events=\"none\">{}</text>",
                esc(&b.label)
            );
            if two {
                put!(
                    o,
                    "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#1c2833\" text-anchor=\"middle\" pointer-events=\"none\">{}</text>",
                    y + 27.0,
                    esc(&size)
                );
            }
        }
    }
    let (labels, n) = lanes(blocks, s);
    for (i, lane, text, x) in labels {
        let b = &blocks[i];
        let bx = ((s.x(b.start) + s.x(b.end)) / 2.0).max(LEFT);
        let (ly, edge) = if lanes_above {
            (y - 4.0 - LANE_H * lane as f64, y)
        } else {
            (y + ROW_H + 11.0 + LANE_H * lane as f64, y + ROW_H)
        };
        let ty = if lanes_above { ly - 2.0 } else { ly };
        put!(
            o,
            "<line class=\"leader\" x1=\"{bx:.1}\" y1=\"{edge:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#7f8c8d\" stroke-width=\"0.6\"/>",
            if lanes_above { ly + 1.0 } else { ly - 9.0 }
        );
        put!(o, "<text x=\"{:.1}\" y=\"{ty:.1}\" font-size=\"10\" fill=\"#1c2833\">{}</text>", x + 1.0, esc(&text));
    }
    (extents, n as f64 * LANE_H + if n > 0 { 6.0 } else { 0.0 })
}

fn axis(o: &mut String, s: &Scale, y: f64, bottom: f64) {
    let step = [0x40u32, 0x100, 0x200, 0x400, 0x800, 0x1000, 0x2000, 0x4000]
        .into_iter()
        .find(|st| s.bytes / f64::from(*st) <= 12.0)
        .unwrap_or(0x8000);
    let mut b = 0u32;
    while f64::from(b) <= s.bytes {
        let x = s.x(b);
        put!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#eaeded\" stroke-width=\"1\"/>"
        );
        put!(
            o,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#566573\" text-anchor=\"middle\">{b:#x}</text>",
            y - 3.0
        );
        b += step;
    }
}

/// The links between the same component on two rows where it sits at another offset.
fn links(
    o: &mut String,
    a: &[(Component, f64, f64)],
    b: &[(Component, f64, f64)],
    ya: f64,
    yb: f64,
    row: Row,
) -> Vec<Component> {
    let mut moved = Vec::new();
    for &(c, a0, a1) in a {
        let Some(&(_, b0, b1)) = b.iter().find(|e| e.0 == c) else { continue };
        if (a0 - b0).abs() < 0.01 && (a1 - b1).abs() < 0.01 {
            continue;
        }
        moved.push(c);
        put!(
            o,
            "<polygon class=\"link\" data-row=\"{}\" data-component=\"{}\" points=\"{a0:.1},{ya:.1} {a1:.1},{ya:.1} {b1:.1},{yb:.1} {b0:.1},{yb:.1}\" \
             fill=\"{}\" fill-opacity=\"0.35\" stroke=\"{}\" stroke-width=\"0.8\"><title>{} moves</title></polygon>",
            row.key(),
            esc(&c.name().to_string()),
            colour(c.index()),
            colour(c.index()),
            esc(&c.name().to_string())
        );
    }
    moved
}

/// A name short enough for a row label: the file name without `_CPUID.txt`-style endings,
/// at most 24 characters.
pub fn short(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.strip_suffix(".txt").or_else(|| base.strip_suffix(".json")).unwrap_or(base);
    let base = base.strip_suffix("_CPUID").unwrap_or(base);
    let base = base.strip_prefix("GenuineIntel").or_else(|| base.strip_prefix("AuthenticAMD")).unwrap_or(base);
    if base.chars().count() > 24 {
        format!("{}…", base.chars().take(23).collect::<String>())
    } else {
        base.to_string()
    }
}

fn describe(p: &Panel<'_>) -> String {
    let l = p.layout;
    let xcomp = (p.xcr0 | p.xss) & l.supported();
    format!(
        "{}: XCR0 {} ({}), IA32_XSS {}; standard {} bytes{}{}",
        short(p.name),
        p.xcr0,
        p.xcr0.names(),
        p.xss,
        l.standard_size(p.xcr0 & l.user_supported()).unwrap_or(0),
        if l.features().compaction() {
            format!(", compacted {} bytes", l.compacted_size(xcomp).unwrap_or(0))
        } else {
            ", no compacted form (no XSAVEC/XSAVES)".into()
        },
        missing(p)
    )
}

/// "; enumerated, subleaf missing: pt|pkru" for a panel whose source lacks subleaves.
fn missing(p: &Panel<'_>) -> String {
    if p.omitted.is_empty() { String::new() } else { format!("; enumerated, subleaf missing: {}", p.omitted.names()) }
}

/// The picture of one or two CPUs as a standalone SVG document.
pub fn svg(panels: &[Panel<'_>]) -> String {
    let bytes = panels
        .iter()
        .map(|p| {
            let xcomp = (p.xcr0 | p.xss) & p.layout.supported();
            p.layout.standard_size_max().max(p.layout.compacted_size(xcomp).unwrap_or(0))
        })
        .max()
        .unwrap_or(EXTENDED_OFFSET as u32)
        .max(EXTENDED_OFFSET as u32);
    let s = Scale { bytes: f64::from(bytes) };
    let mut body = String::new();
    let title = if panels.len() == 2 {
        format!("XSAVE layouts: {} and {}", short(panels[0].name), short(panels[1].name))
    } else {
        format!("XSAVE layout: {}", panels.first().map_or(String::new(), |p| short(p.name)))
    };
    put!(body, "<text x=\"8\" y=\"20\" font-size=\"16\" font-weight=\"bold\">{}</text>", esc(&title));
    let mut y = 38.0;
    for p in panels {
        put!(body, "<text x=\"8\" y=\"{y:.1}\" font-size=\"11\" fill=\"#34495e\">{}</text>", esc(&describe(p)));
        y += 15.0;
    }
    let axis_y = y + 14.0;
    y = axis_y + 8.0;
    let mut notes: Vec<String> = Vec::new();
    let std_blocks: Vec<Vec<Block>> = panels.iter().map(standard_blocks).collect();
    let cmp_blocks: Vec<Option<Vec<Block>>> = panels.iter().map(compacted_blocks).collect();
    for (row, sets) in [
        (Row::Standard, std_blocks.iter().map(Some).collect::<Vec<_>>()),
        (Row::Compacted, cmp_blocks.iter().map(Option::as_ref).collect::<Vec<_>>()),
    ] {
        if panels.len() == 2 {
            let (a, b) = (sets[0], sets[1]);
            let top_lanes = a.map_or(0, |a| lanes(a, &s).1) as f64 * LANE_H;
            y += top_lanes + 4.0;
            let ya = y;
            let ea = match a {
                Some(a) => draw_row(&mut body, a, &s, ya, row, panels[0].name, true).0,
                None => {
                    no_compaction(&mut body, ya, panels[0].name);
                    Vec::new()
                }
            };
            let yb = ya + ROW_H + 46.0;
            let (eb, below) = match b {
                Some(b) => draw_row(&mut body, b, &s, yb, row, panels[1].name, false),
                None => {
                    no_compaction(&mut body, yb, panels[1].name);
                    (Vec::new(), 0.0)
                }
            };
            let moved = links(&mut body, &ea, &eb, ya + ROW_H, yb, row);
            if !moved.is_empty() {
                let names: Vec<String> = moved.iter().map(|c| c.name().to_string()).collect();
                notes.push(format!(
                    "{} row: {} move{}",
                    row.key(),
                    names.join(", "),
                    if moved.len() == 1 { "s" } else { "" }
                ));
            }
            y = yb + ROW_H + below + 22.0;
        } else if let Some(p) = panels.first() {
            match sets[0] {
                Some(blocks) => {
                    let (_, below) = draw_row(&mut body, blocks, &s, y, row, p.name, false);
                    y += ROW_H + below + 22.0;
                }
                None => {
                    no_compaction(&mut body, y, p.name);
                    y += ROW_H + 22.0;
                }
            }
        }
    }
    if panels.len() == 2 {
        let (a, b) = (panels[0].layout, panels[1].layout);
        let (ma, mb) = (panels[0].omitted, panels[1].omitted);
        for (x, y2, y2_missing, name) in [(a, b, mb, panels[0].name), (b, a, ma, panels[1].name)] {
            // A component the other side enumerates without a subleaf is unknown there, not absent.
            let only = (x.supported() - y2.supported() - y2_missing) - Xfeatures::LEGACY;
            if !only.is_empty() {
                notes.push(format!("only on {}: {}", short(name), only.names()));
            }
        }
    }
    for p in panels {
        if !p.omitted.is_empty() {
            notes.push(format!(
                "{}: enumerated, subleaf missing: {} (CPUID 0xD lacks their subleaves: place unknown, not drawn)",
                short(p.name),
                p.omitted.names()
            ));
        }
        let sup = p.layout.supervisor_supported() - p.xss;
        if !sup.is_empty() {
            notes.push(format!(
                "{}: supervisor components {} not in IA32_XSS {}: not drawn (pass --xss {})",
                short(p.name),
                sup.names(),
                p.xss,
                p.xss | p.layout.supervisor_supported()
            ));
        }
    }
    notes.push("to scale; hatched: holes of the standard format; dotted: 64-byte alignment padding; faded: not in XCR0; hover a block for its offset and size".into());
    for n in &notes {
        put!(body, "<text class=\"note\" x=\"8\" y=\"{:.1}\" font-size=\"11\" fill=\"#566573\">{}</text>", y, esc(n));
        y += 15.0;
    }
    let height = y + 6.0;
    let mut o = String::new();
    put!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"layout\" width=\"{:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {:.0} {height:.0}\" \
         font-family=\"DejaVu Sans, Verdana, sans-serif\"><rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>{}",
        LEFT + WIDTH + 20.0,
        LEFT + WIDTH + 20.0,
        defs()
    );
    axis(&mut o, &s, axis_y, height - 15.0 * notes.len() as f64 - 10.0);
    o.push_str(&body);
    o.push_str("</svg>\n");
    o
}

fn no_compaction(o: &mut String, y: f64, name: &str) {
    put!(o, "<text x=\"8\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\">{}</text>", y + 14.0, esc(name));
    put!(
        o,
        "<text x=\"{LEFT:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#566573\">no compacted form: this CPU has no XSAVEC/XSAVES</text>",
        y + 21.0
    );
}

/// The picture in a self-contained HTML page, with a table of every component per CPU.
pub fn html(panels: &[Panel<'_>]) -> String {
    let mut o = String::new();
    let title = if panels.len() == 2 {
        format!("XSAVE layouts: {} and {}", panels[0].name, panels[1].name)
    } else {
        format!("XSAVE layout: {}", panels.first().map_or("", |p| p.name))
    };
    put!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{}</style></head><body>",
        esc(&title),
        super::CSS
    );
    put!(o, "<h1>{}</h1>", esc(&title));
    o.push_str(&svg(panels));
    for p in panels {
        let l = p.layout;
        let xcomp = (p.xcr0 | p.xss) & l.supported();
        put!(o, "<h2>{}</h2><p class=\"note\">{}</p>", esc(p.name), esc(&describe(p)));
        for n in (xstate::layout::Partial { layout: l.clone(), omitted: p.omitted }).notes() {
            put!(o, "<p class=\"note\">note: {}</p>", esc(&n));
        }
        o.push_str(
            "<table><tr><th>index</th><th>component</th><th>size</th><th>standard offset</th><th>compacted offset</th><th>flags</th></tr>",
        );
        for c in l.supported().iter() {
            let g = l.geometry(c).unwrap_or_default();
            let mut flags = crate::cmd::layout::component_flags(&g);
            if !xcomp.contains(c) {
                flags.push("not enabled");
            }
            put!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.index(),
                esc(&l.name(c)),
                g.size,
                if g.supervisor { "-".into() } else { format!("{:#x}", g.offset) },
                l.compacted_offset(c, xcomp).map_or("-".into(), |v| format!("{v:#x}")),
                flags.join(" ")
            );
        }
        o.push_str("</table>");
        let holes = l.holes(l.user_supported()).unwrap_or_default();
        if !holes.is_empty() {
            let h: Vec<String> =
                holes.iter().map(|r| format!("{:#x}..{:#x} ({} bytes)", r.start, r.end, r.end - r.start)).collect();
            put!(o, "<p class=\"note\">holes of the standard format: {}</p>", esc(&h.join(", ")));
        }
    }
    o.push_str("<p class=\"note\">Written by xstate layout from CPUID leaf 0xD alone; no network, fonts or scripts.</p></body></html>\n");
    o
}
