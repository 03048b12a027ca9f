//! The project's JSON form of CPUID data.
//!
//! ```json
//! { "format": "xstate-cpuid", "vendor": "GenuineIntel",
//!   "leaf0d": [ {"index": 0, "eax": 393447, "ebx": 11008, "ecx": 11008, "edx": 0}, ... ],
//!   "leaves": [ {"leaf": 0, "subleaf": 0, "eax": 36, "ebx": ..., "ecx": ..., "edx": ...}, ... ] }
//! ```
//!
//! Register values may be JSON integers or strings of hex digits (`"000602E7"` or
//! `"0x602e7"`), so one entry of a corpus file reads as is. `xstate host --json` and `xstate policy
//! --json` write this form; `format`, `vendor` and `leaves` are optional on input, and the array
//! may also be called `subleaves` (older policy files).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde_json::{Map, Value, json};

use super::{CpuidData, CpuidFormat, ParseError, Regs};

fn reg(v: &Value, what: &str) -> Result<u32, ParseError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| ParseError::whole(format!("{what}: {n} is not a 32-bit unsigned value"))),
        Value::String(s) => {
            let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError::whole(format!("{what}: {s:?} is not a hex 32-bit value")));
            }
            Ok(u32::from_str_radix(h, 16).unwrap_or(0))
        }
        _ => Err(ParseError::whole(format!("{what}: expected an integer or a hex string"))),
    }
}

fn regs(o: &Map<String, Value>, what: &str) -> Result<Regs, ParseError> {
    let mut r = [0u32; 4];
    for (k, name) in ["eax", "ebx", "ecx", "edx"].iter().enumerate() {
        let v = o.get(*name).ok_or_else(|| ParseError::whole(format!("{what}: missing \"{name}\"")))?;
        r[k] = reg(v, &format!("{what}.{name}"))?;
    }
    Ok(Regs::new(r[0], r[1], r[2], r[3]))
}

/// Reads the project's JSON form (see the module documentation).
pub fn parse_json(text: &str) -> Result<CpuidData, ParseError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ParseError { line: Some(e.line()), message: format!("invalid JSON: {e}") })?;
    let Value::Object(o) = v else {
        return Err(ParseError::whole(
            "expected a JSON object with \"leaf0d\" (an array such as corpus.json holds many CPUs: pick one entry)",
        ));
    };
    let mut data = CpuidData::new(CpuidFormat::Json);
    // `xstate policy --json` before 0.2 named the array "subleaves"; both are read.
    let sub = o
        .get("leaf0d")
        .or_else(|| o.get("subleaves"))
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError::whole("missing \"leaf0d\" array"))?;
    for (k, e) in sub.iter().enumerate() {
        let what = format!("leaf0d[{k}]");
        let e = e.as_object().ok_or_else(|| ParseError::whole(format!("{what}: expected an object")))?;
        let idx = e
            .get("index")
            .and_then(Value::as_u64)
            .filter(|&i| i < 64)
            .ok_or_else(|| ParseError::whole(format!("{what}: \"index\" must be an integer 0..63")))?;
        if data.leaf0d().recorded(idx as u8) {
            return Err(ParseError::whole(format!("{what}: subleaf {idx} given twice")));
        }
        data.insert(0xD, idx as u32, regs(e, &what)?);
    }
    if let Some(l) = o.get("leaves") {
        let l = l.as_array().ok_or_else(|| ParseError::whole("\"leaves\" must be an array"))?;
        for (k, e) in l.iter().enumerate() {
            let what = format!("leaves[{k}]");
            let e = e.as_object().ok_or_else(|| ParseError::whole(format!("{what}: expected an object")))?;
            let leaf = e.get("leaf").map(|v| reg(v, &format!("{what}.leaf"))).transpose()?;
            let leaf = leaf.ok_or_else(|| ParseError::whole(format!("{what}: missing \"leaf\"")))?;
            let subleaf = e.get("subleaf").map(|v| reg(v, &format!("{what}.subleaf"))).transpose()?.unwrap_or(0);
            if leaf == 0xD {
                continue; // "leaf0d" is authoritative
            }
            data.insert(leaf, subleaf, regs(e, &what)?);
        }
    }
    Ok(data)
}

/// The project's JSON form of `data` (registers as integers).
pub fn to_json_value(data: &CpuidData) -> Value {
    let leaf0d: Vec<Value> = data
        .leaf0d()
        .iter()
        .map(|(i, r)| json!({"index": i, "eax": r.eax, "ebx": r.ebx, "ecx": r.ecx, "edx": r.edx}))
        .collect();
    let leaves: Vec<Value> = data
        .entries()
        .map(|((l, s), r)| json!({"leaf": l, "subleaf": s, "eax": r.eax, "ebx": r.ebx, "ecx": r.ecx, "edx": r.edx}))
        .collect();
    let mut o = Map::new();
    o.insert("format".into(), Value::from("xstate-cpuid"));
    if let Some(v) = data.vendor() {
        o.insert("vendor".into(), Value::from(v));
    }
    o.insert("leaf0d".into(), Value::from(leaf0d));
    o.insert("leaves".into(), Value::from(leaves));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xfeatures::Xfeatures;

    #[test]
    fn corpus_entry_reads() {
        let t = r#"{"file": "x", "leaf0d": [{"index": 0, "eax": "00000207", "ebx": "00000340", "ecx": "00000988", "edx": "00000000"},
                    {"index": 9, "eax": 8, "ebx": "0x980", "ecx": 0, "edx": 0}]}"#;
        let d = parse_json(t).unwrap();
        assert_eq!(d.leaf0d().xcr0_supported(), Xfeatures(0x207));
        assert_eq!(d.leaf0d().get(9).ebx, 0x980);
    }

    #[test]
    fn round_trip() {
        let mut d = CpuidData::new(CpuidFormat::Synthetic);
        d.insert(0, 0, Regs::new(0xd, 0x756E6547, 0x6C65746E, 0x49656E69));
        d.insert(0xD, 0, Regs::new(0x7, 0x340, 0x340, 0));
        d.insert(0xD, 2, Regs::new(0x100, 0x240, 0, 0));
        let text = serde_json::to_string(&to_json_value(&d)).unwrap();
        let back = parse_json(&text).unwrap();
        assert_eq!(back.leaf0d(), d.leaf0d());
        assert_eq!(back.vendor(), d.vendor());
    }

    #[test]
    fn errors() {
        assert!(parse_json("[1]").is_err());
        assert_eq!(parse_json("{\n\"leaf0d\": [\n").unwrap_err().line, Some(3));
        let e = parse_json(r#"{"leaf0d": [{"index": 0, "eax": "zz", "ebx": 0, "ecx": 0, "edx": 0}]}"#).unwrap_err();
        assert!(e.message.contains("leaf0d[0].eax"), "{e}");
        let e = parse_json(r#"{"leaf0d": [{"index": 70, "eax": 0, "ebx": 0, "ecx": 0, "edx": 0}]}"#).unwrap_err();
        assert!(e.message.contains("index"), "{e}");
        let e =
            parse_json(r#"{"leaf0d": [{"index": 0, "eax": 4294967296, "ebx": 0, "ecx": 0, "edx": 0}]}"#).unwrap_err();
        assert!(e.message.contains("32-bit"), "{e}");
    }
}
