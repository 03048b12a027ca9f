//! The protobuf wire encoding, as far as CRIU's images need it: a zero-copy field iterator
//! over untrusted bytes and the two encoders a patch needs (varint, length-delimited).
//!
//! Written from the encoding's rules (protobuf "Encoding" documentation): a field is a varint
//! key `number << 3 | wire type`, then a varint (type 0), 8 little-endian bytes (1), a varint
//! length and that many bytes (2), or 4 little-endian bytes (5); types 3 and 4 (groups) are
//! deprecated and refused. A varint is at most 10 bytes of 7 bits, least significant first.
//! Repeated scalars come one field per element, or packed into one length-delimited field
//! (a reader accepts both).

use alloc::vec::Vec;

/// A field's value as the wire carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: the bytes after the length.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// One field of a message, with where it lies in the message's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// Its value.
    pub value: Value<'a>,
    /// Offset of the key within the message.
    pub start: usize,
    /// Offset of the value (after the key, and after the length of a type 2 field).
    pub value_start: usize,
    /// Offset just past the field.
    pub end: usize,
}

/// A malformed encoding: what was wrong and where, relative to the message start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireError {
    /// Byte offset within the message.
    pub offset: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// Reads a varint at `pos`: the value and the offset after it.
pub(crate) fn varint(b: &[u8], pos: usize) -> Result<(u64, usize), WireError> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&byte) = b.get(pos + i) else {
            return Err(WireError { offset: pos, what: "varint runs past the end" });
        };
        if i == 9 && byte > 1 {
            return Err(WireError { offset: pos, what: "varint longer than 64 bits" });
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, pos + i + 1));
        }
    }
    Err(WireError { offset: pos, what: "varint longer than 10 bytes" })
}

/// Appends `v` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field `number` holding `payload`.
pub(crate) fn put_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends a varint field `number` holding `v`.
pub(crate) fn put_varint_field(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

/// The fields of a message, in order.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates over the fields of the message `buf`.
pub(crate) fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, pos: 0, failed: false }
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Result<Field<'a>, WireError> {
        let b = self.buf;
        let start = self.pos;
        let (key, p) = varint(b, start)?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(WireError { offset: start, what: "field number outside 1..2^29" });
        }
        let number = number as u32;
        let fixed = |n: usize| -> Result<(&'a [u8], usize), WireError> {
            let end = p.checked_add(n).filter(|&e| e <= b.len());
            end.map(|e| (&b[p..e], e)).ok_or(WireError { offset: p, what: "fixed-width value runs past the end" })
        };
        let (value, value_start, end) = match key & 7 {
            0 => {
                let (v, e) = varint(b, p)?;
                (Value::Varint(v), p, e)
            }
            1 => {
                let (s, e) = fixed(8)?;
                (Value::Fixed64(u64::from_le_bytes(s.try_into().unwrap_or([0; 8]))), p, e)
            }
            2 => {
                let (len, q) = varint(b, p)?;
                let end = usize::try_from(len).ok().and_then(|l| q.checked_add(l)).filter(|&e| e <= b.len());
                let end = end.ok_or(WireError { offset: p, what: "length-delimited field runs past the end" })?;
                (Value::Bytes(&b[q..end]), q, end)
            }
            5 => {
                let (s, e) = fixed(4)?;
                (Value::Fixed32(u32::from_le_bytes(s.try_into().unwrap_or([0; 4]))), p, e)
            }
            _ => return Err(WireError { offset: start, what: "wire type other than 0, 1, 2 or 5" }),
        };
        self.pos = end;
        Ok(Field { number, value, start, value_start, end })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_field();
        self.failed = r.is_err();
        Some(r)
    }
}

/// The elements of a repeated varint field occurrence: one (unpacked) or a packed run.
pub(crate) fn varints(value: Value<'_>, at: usize) -> Result<Vec<u64>, WireError> {
    match value {
        Value::Varint(v) => Ok(alloc::vec![v]),
        Value::Bytes(b) => {
            let mut out = Vec::new();
            let mut p = 0;
            while p < b.len() {
                let (v, q) = varint(b, p).map_err(|e| WireError { offset: at + e.offset, what: e.what })?;
                out.push(v);
                p = q;
            }
            Ok(out)
        }
        _ => Err(WireError { offset: at, what: "a varint field with a fixed-width wire type" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_overlong() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(varint(&b, 0), Ok((v, b.len())));
        }
        assert!(varint(&[0x80; 10], 0).is_err());
        assert!(varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], 0).is_err());
        assert!(varint(&[0x80], 0).is_err());
    }

    #[test]
    fn fields_packed_and_unpacked() {
        let mut m = Vec::new();
        put_varint_field(&mut m, 1, 0xe7);
        put_varint_field(&mut m, 2, 5);
        put_bytes(&mut m, 2, &[1, 0x80, 0x01]);
        let f: Vec<_> = fields(&m).collect::<Result<_, _>>().unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].value, Value::Varint(0xe7));
        assert_eq!(varints(f[2].value, f[2].value_start).unwrap(), [1, 128]);
        // A length past the end and a group are refused, never a panic.
        assert!(fields(&[0x12, 0x05, 0x00]).any(|r| r.is_err()));
        assert!(fields(&[0x0b]).any(|r| r.is_err()));
    }
}
