//! The fleet page of `xstate compat --matrix DIR --html FILE`: one self-contained HTML file (no
//! network, no scripts) with the answer first, the class-by-class verdict grid as colours (hover
//! a cell for its verdict, click it for the reasons and what to mask), each layout class with a
//! representative CPU and its picture, the fleet's baseline, and how the figures were computed.
//!
//! It stays readable as fleets grow because everything is per layout class, not per CPU: the
//! grid holds the [`GRID_MAX`] largest classes (the rest are listed with their verdict counts),
//! CPU names sit in collapsed lists, and a pair's reasons are written once, shown on click.

use std::fmt::Write as _;

use xstate::compat::{Side, Verdict, check};
use xstate::fleet::{Baseline, Host, HostResult};
use xstate::{Layout, Xfeatures};

use super::layout::{Panel, short, svg};
use super::{CSS, esc, put};
use crate::cmd::baseline::{answer, feature_names};

/// The most classes the grid shows; a fleet with more lists the others by size.
pub const GRID_MAX: usize = 60;

/// The classes whose pictures are open when the page loads.
const OPEN_PICTURES: usize = 6;

/// What the matrix computed, for the page.
pub struct Fleet<'a> {
    /// The folder.
    pub dir: &'a str,
    /// The text answer line of the matrix.
    pub answer: &'a str,
    /// One layout per class.
    pub layouts: &'a [Layout],
    /// The CPUs (indices into `cpus`) of each class.
    pub members: &'a [Vec<usize>],
    /// Every CPU with a verdict: name and class.
    pub cpus: &'a [(String, usize)],
    /// Class-level verdicts, row-major (`from * n + to`).
    pub verdicts: &'a [Verdict],
    /// CPU pairs as is, after re-layout, incompatible.
    pub counts: [usize; 3],
    /// CPUs missing a user subleaf: no verdict.
    pub incomplete: &'a [(String, Xfeatures)],
    /// Sources that give no layout, with why.
    pub unusable: &'a [(String, String)],
    /// The baseline of every host read, or why there is none.
    pub baseline: Result<(&'a Baseline, &'a [Host]), String>,
    /// Seconds the matrix took to compute (reading included).
    pub seconds: f64,
}

const PAGE_CSS: &str = "table.grid{border-collapse:separate;border-spacing:1px}table.grid td{border:0;padding:0}\
td.cell{width:14px;height:14px;padding:0}td.cell a{display:block;width:14px;height:14px}\
td.v0{background:#58d68d}td.v1{background:#f5b041}td.v2{background:#ec7063}\
td.cell:hover{outline:2px solid #17202a}th.r{text-align:right;font-weight:normal;white-space:nowrap;background:none;border:0}\
th.c{font-weight:normal;font-size:9px;background:none;border:0;writing-mode:vertical-rl;transform:rotate(180deg);height:34px}\
.pair{display:none;border:1px solid #aab7b8;background:#fbfcfc;padding:6px 12px;margin:8px 0}\
.pair:target{display:block}.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}\
details{margin:4px 0}summary{cursor:pointer}";

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Compatible => "compatible as is",
        Verdict::AfterRelayout => "compatible after re-layout",
        Verdict::Incompatible => "incompatible",
    }
}

fn class_title(f: &Fleet<'_>, k: usize) -> String {
    let l = &f.layouts[k];
    format!(
        "L{k}: {} CPU{}, XCR0 {}, IA32_XSS {}, standard max {} bytes, e.g. {}",
        f.members[k].len(),
        if f.members[k].len() == 1 { "" } else { "s" },
        l.user_supported(),
        l.supervisor_supported(),
        l.standard_size_max(),
        f.cpus[f.members[k][0]].0
    )
}

/// The page.
pub fn page(f: &Fleet<'_>) -> String {
    let n = f.layouts.len();
    let mut o = String::new();
    put!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>xstate fleet: {}</title><style>{CSS}{PAGE_CSS}</style></head><body>",
        esc(f.dir)
    );
    put!(o, "<h1>XSAVE fleet: {}</h1>", esc(f.dir));
    put!(o, "<p class=\"answer\">{}</p>", esc(f.answer));
    if let Ok((b, hosts)) = &f.baseline {
        put!(o, "<p class=\"answer\">{}</p>", esc(&answer(b, hosts)));
    }
    put!(
        o,
        "<p class=\"note\">{} CPUs with a verdict in {n} layout classes; {} incomplete (a user component's subleaf missing: no verdict); \
         {} unusable; CPU pairs: {} as is, {} after re-layout, {} incompatible. <a href=\"#grid\">grid</a> · \
         <a href=\"#classes\">classes</a> · <a href=\"#baseline\">baseline</a> · <a href=\"#how\">how computed</a></p>",
        f.cpus.len(),
        f.incomplete.len(),
        f.unusable.len(),
        f.counts[0],
        f.counts[1],
        f.counts[2]
    );
    grid(&mut o, f);
    classes(&mut o, f);
    baseline(&mut o, f);
    if !f.incomplete.is_empty() || !f.unusable.is_empty() {
        o.push_str("<h2 id=\"unplaced\">CPUs without a verdict</h2><table><tr><th>CPU</th><th>why</th></tr>");
        for (name, m) in f.incomplete {
            put!(
                o,
                "<tr><td>{}</td><td>incomplete: CPUID 0xD subleaf missing for {} ({})</td></tr>",
                esc(name),
                m,
                esc(&m.names().to_string())
            );
        }
        for (name, e) in f.unusable {
            put!(o, "<tr><td>{}</td><td>unusable: {}</td></tr>", esc(name), esc(e));
        }
        o.push_str("</table>");
    }
    how(&mut o, f);
    o.push_str("</body></html>\n");
    o
}

/// The classes in the grid: the largest, at most [`GRID_MAX`], in class order.
fn shown(f: &Fleet<'_>) -> Vec<usize> {
    let mut by_size: Vec<usize> = (0..f.layouts.len()).collect();
    by_size.sort_by(|a, b| f.members[*b].len().cmp(&f.members[*a].len()).then(a.cmp(b)));
    by_size.truncate(GRID_MAX);
    by_size.sort();
    by_size
}

fn grid(o: &mut String, f: &Fleet<'_>) {
    let n = f.layouts.len();
    let show = shown(f);
    o.push_str("<h2 id=\"grid\">Class-by-class verdicts</h2>");
    put!(
        o,
        "<p class=\"note key\">rows: from, columns: to; hover a cell for its verdict, click it for the reasons and what to mask.\
         <span style=\"background:#58d68d\"></span>as is<span style=\"background:#f5b041\"></span>after re-layout\
         <span style=\"background:#ec7063\"></span>incompatible</p>"
    );
    if show.len() < n {
        let covered: usize = show.iter().map(|&k| f.members[k].len()).sum();
        put!(
            o,
            "<p class=\"note\">The {} largest of {n} classes ({covered} of {} CPUs); the others are listed under <a href=\"#classes\">classes</a> \
             with their verdict counts; <code>xstate compat --matrix DIR --json</code> has every pair.</p>",
            show.len(),
            f.cpus.len()
        );
    }
    o.push_str("<table class=\"grid\"><tr><th class=\"r\"></th>");
    for &j in &show {
        put!(o, "<th class=\"c\">L{j}</th>");
    }
    o.push_str("</tr>");
    let mut details = String::new();
    for &i in &show {
        put!(o, "<tr><th class=\"r\"><a href=\"#c{i}\">L{i}</a> ({})</th>", f.members[i].len());
        for &j in &show {
            let v = f.verdicts[i * n + j];
            let r = (v != Verdict::Compatible || i != j)
                .then(|| check(&Side::user_max(&f.layouts[i]), &Side::user_max(&f.layouts[j])));
            let mut tip = format!("L{i} → L{j}: {}", verdict_text(v));
            if let Some(r) = &r {
                if let Some(first) = r.reasons.iter().find(|x| x.severity() == v && v != Verdict::Compatible) {
                    put!(tip, ": {first}");
                }
                match v {
                    Verdict::Incompatible => put!(tip, "; mask {} for re-layout", names(&feature_names(r.mask))),
                    Verdict::AfterRelayout => put!(tip, "; mask {} for as is", names(&feature_names(r.mask_as_is))),
                    Verdict::Compatible => {}
                }
            }
            put!(o, "<td class=\"cell v{}\" title=\"{}\"><a href=\"#p{i}-{j}\"></a></td>", v as u8, esc(&tip));
            put!(details, "<div class=\"pair\" id=\"p{i}-{j}\"><b>{}</b>", esc(&tip));
            if let Some(r) = &r
                && !r.reasons.is_empty()
            {
                details.push_str("<ul>");
                for reason in &r.reasons {
                    put!(details, "<li>{}: {}</li>", reason.severity().key(), esc(&reason.to_string()));
                }
                details.push_str("</ul>");
                put!(
                    details,
                    "<p>mask in the source policy for re-layout: {} ({}); for as is: {} ({})</p>",
                    r.mask,
                    esc(&names(&feature_names(r.mask))),
                    r.mask_as_is,
                    esc(&names(&feature_names(r.mask_as_is)))
                );
            }
            put!(
                details,
                "<p class=\"note\">from {} · to {}</p></div>",
                esc(&class_title(f, i)),
                esc(&class_title(f, j))
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
    o.push_str(&details);
}

fn names(v: &[String]) -> String {
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

fn classes(o: &mut String, f: &Fleet<'_>) {
    let n = f.layouts.len();
    let show = shown(f);
    o.push_str("<h2 id=\"classes\">Layout classes</h2><p class=\"note\">CPUs with the same supported components, sizes, \
        standard offsets, alignment and compaction are one class. Each picture is the class's first CPU, every supported \
        component placed (XCOMP_BV = XCR0 | IA32_XSS supported).</p>");
    for (opened, &k) in show.iter().enumerate() {
        let l = &f.layouts[k];
        let name = format!("L{k} e.g. {}", f.cpus[f.members[k][0]].0);
        let open = if opened < OPEN_PICTURES { " open" } else { "" };
        put!(
            o,
            "<div class=\"class\" id=\"c{k}\"><details{open}><summary><b>{}</b></summary>",
            esc(&class_title(f, k))
        );
        o.push_str(&svg(&[Panel {
            name: &name,
            layout: l,
            xcr0: l.user_supported(),
            xss: l.supervisor_supported(),
            omitted: Xfeatures::EMPTY,
        }]));
        o.push_str("</details><details><summary>members</summary><p class=\"note\">");
        let list: Vec<String> = f.members[k].iter().map(|&c| esc(&f.cpus[c].0)).collect();
        o.push_str(&list.join("<br>"));
        o.push_str("</p></details></div>");
    }
    if show.len() < n {
        o.push_str("<h3>Smaller classes</h3><table><tr><th>class</th><th>CPUs</th><th>XCR0</th><th>example</th><th>to: as is / re-layout / incompatible classes</th></tr>");
        for k in (0..n).filter(|k| !show.contains(k)) {
            let row = &f.verdicts[k * n..(k + 1) * n];
            let c = |v: Verdict| row.iter().filter(|x| **x == v).count();
            put!(
                o,
                "<tr id=\"c{k}\"><td>L{k}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {} / {}</td></tr>",
                f.members[k].len(),
                f.layouts[k].user_supported(),
                esc(&short(&f.cpus[f.members[k][0]].0)),
                c(Verdict::Compatible),
                c(Verdict::AfterRelayout),
                c(Verdict::Incompatible)
            );
        }
        o.push_str("</table>");
    }
}

fn baseline(o: &mut String, f: &Fleet<'_>) {
    o.push_str("<h2 id=\"baseline\">The fleet's baseline</h2>");
    let (b, hosts) = match &f.baseline {
        Ok(x) => *x,
        Err(e) => {
            put!(o, "<p>No baseline: {}</p>", esc(e));
            return;
        }
    };
    put!(
        o,
        "<p>What <code>xstate policy --baseline {}</code> writes: the largest guest policy every host with XSAVE runs \
         (hosts whose dump does not place a component run the baseline without it).</p>",
        esc(f.dir)
    );
    o.push_str("<table><tr><th>component</th><th>size</th><th>where the hosts put it</th></tr>");
    for p in &b.components {
        let places: Vec<String> = p
            .places
            .iter()
            .map(|pl| {
                format!(
                    "{} on {} host{}",
                    pl.offset.map_or("compacted only".into(), |o| format!("{o:#x}")),
                    pl.hosts.len(),
                    if pl.hosts.len() == 1 { "" } else { "s" }
                )
            })
            .collect();
        put!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.component.name().to_string()),
            p.size,
            esc(&places.join("; "))
        );
    }
    o.push_str("</table>");
    put!(o, "<p>{} offset class{}:", b.classes.len(), if b.classes.len() == 1 { "" } else { "es" });
    for (k, c) in b.classes.iter().enumerate() {
        put!(
            o,
            " class {k}: {} hosts, e.g. {}{};",
            c.hosts.len(),
            esc(&hosts[c.hosts[0]].name),
            if c.moved.is_empty() {
                String::new()
            } else {
                format!(" ({} elsewhere)", esc(&names(&feature_names(c.moved))))
            }
        );
    }
    o.push_str("</p>");
    let dropped: Vec<String> = b
        .hosts
        .iter()
        .zip(hosts)
        .filter_map(|(r, h)| match r {
            HostResult::Dropped(d) => Some(format!("{}: {d}", h.name)),
            HostResult::Kept { .. } => None,
        })
        .collect();
    if !dropped.is_empty() {
        put!(
            o,
            "<details><summary>{} hosts drop out</summary><p class=\"note\">{}</p></details>",
            dropped.len(),
            dropped.iter().map(|d| esc(d)).collect::<Vec<_>>().join("<br>")
        );
    }
    if !b.limits.is_empty() {
        o.push_str("<details><summary>why features are left out</summary><table><tr><th>feature</th><th>lacked by</th><th>not placed by</th><th>sizes differ</th></tr>");
        for l in &b.limits {
            let name = l.feature.map(|f| f.name().to_string()).unwrap_or_else(|| feature_names(l.components).join(","));
            put!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&name),
                l.lacked.len(),
                l.unplaced.len(),
                l.sizes.len()
            );
        }
        o.push_str("</table></details>");
    }
}

fn how(o: &mut String, f: &Fleet<'_>) {
    put!(
        o,
        "<h2 id=\"how\">How the figures were computed</h2><ul>\
         <li>Every file under <code>{}</code> was read as a CPUID source (AIDA64/InstLatX64 text, <code>cpuid -r</code>, xstate JSON) \
         and its leaf 0xD turned into a layout; a dump missing the subleaf of a user component the CPU enumerates is \
         <i>incomplete</i> and gets no verdict; a CPU without XSAVE is unusable here.</li>\
         <li>Layout classes: equal supported XCR0 and IA32_XSS masks, compaction and XSAVES, and for every component its size, \
         standard offset, supervisor flag and 64-byte alignment.</li>\
         <li>Each class pair's verdict is <code>xstate compat</code>'s for every user state of the source (XCR0 = its supported \
         mask, XSS = 0): incompatible if a state is missing or has another size on the destination; after re-layout if a \
         standard offset or the 64-byte alignment differs (both compacting) or the destination's largest standard image is \
         smaller; else as is. CPU pair counts are class verdicts weighted by class sizes.</li>\
         <li>The baseline is <code>xstate policy --baseline</code>: the XCR0/IA32_XSS and XSAVE instruction features every host has, with \
         equal sizes, within the XCR0 rules; hosts grouped by where they put each component; the largest group gives the leaf 0xD.</li>\
         <li>Computed in {:.2} s. Pictures: to scale, from leaf 0xD alone.</li></ul>",
        esc(f.dir),
        f.seconds
    );
}
