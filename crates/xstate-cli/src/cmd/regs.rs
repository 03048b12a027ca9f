//! Register output shared by `inspect --regs` and `core --regs`: the decoder's registers
//! ([`xstate::image::regs`], gdb's names) as JSON and as table lines.

use serde_json::{Map, Value, json};
use xstate::Layout;
use xstate::image::regs::{Decoded, Kind, Register};

/// One register as JSON: `hex`, `component`, plus `float` (x87 registers with a finite value)
/// and `value` (integer registers of at most 8 bytes).
fn register_value(r: &Register) -> Value {
    let mut o = Map::new();
    o.insert("hex".into(), json!(r.hex()));
    o.insert("component".into(), json!(r.component.to_string()));
    if let Some(f) = r.as_f64().filter(|f| f.is_finite()) {
        o.insert("float".into(), json!(f));
    }
    if r.kind == Kind::Int
        && let Some(v) = r.as_u64()
    {
        o.insert("value".into(), json!(v));
    }
    Value::Object(o)
}

/// The `registers` object (name → [`register_value`]) and the `undecoded` list (component
/// names under `layout`) of a decoded image.
pub fn registers_json(d: &Decoded, layout: &Layout) -> (Value, Value) {
    let regs: Map<String, Value> = d.registers.iter().map(|r| (r.name.clone(), register_value(r))).collect();
    let undecoded = json!(d.undecoded.iter().map(|c| layout.name(*c)).collect::<Vec<_>>());
    (Value::Object(regs), undecoded)
}

/// One register as a table line (without indentation or newline): name, hex and, for x87
/// registers, the value as a number.
pub fn register_line(r: &Register) -> String {
    match r.as_f64() {
        Some(f) => format!("{:<12} {}  ({f})", r.name, r.hex()),
        None => format!("{:<12} {}", r.name, r.hex()),
    }
}
