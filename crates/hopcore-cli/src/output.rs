//! Rendering responses for people: code, options (-v) and payload, pretty-printed by
//! Content-Format (CBOR in diagnostic notation, JSON indented, text as is).

use std::fmt::Write as _;

use hopcore_codec::{content_format, num, Message, Registry};

/// Renders a payload according to its Content-Format.
pub fn render_payload(content_format: Option<u32>, payload: &[u8]) -> String {
    match content_format.map(|c| c as u16) {
        Some(content_format::JSON) | Some(110) => match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| lossy(payload)),
            Err(_) => lossy(payload),
        },
        Some(content_format::CBOR) | Some(112) | Some(63) => render_cbor(payload),
        Some(content_format::OCTET_STREAM) => hexdump(payload),
        Some(_) | None => match std::str::from_utf8(payload) {
            Ok(s) => s.to_string(),
            Err(_) => hexdump(payload),
        },
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// CBOR (or a CBOR sequence) in diagnostic notation (RFC 8949 §8).
pub fn render_cbor(payload: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let mut cursor = std::io::Cursor::new(rest);
        match ciborium::de::from_reader::<ciborium::Value, _>(&mut cursor) {
            Ok(v) => {
                if !out.is_empty() {
                    out.push_str(",\n");
                }
                diag(&v, &mut out);
                let used = cursor.position() as usize;
                rest = &rest[used.min(rest.len())..];
            }
            Err(e) => {
                let _ = write!(out, "{}(invalid CBOR: {e}) {}", if out.is_empty() { "" } else { "\n" }, hexdump(rest));
                break;
            }
        }
    }
    out
}

fn diag(v: &ciborium::Value, out: &mut String) {
    use ciborium::Value as V;
    match v {
        V::Integer(i) => {
            let _ = write!(out, "{}", i128::from(*i));
        }
        V::Bytes(b) => {
            out.push_str("h'");
            for x in b {
                let _ = write!(out, "{x:02x}");
            }
            out.push('\'');
        }
        V::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        V::Text(t) => {
            let _ = write!(out, "{t:?}");
        }
        V::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        V::Null => out.push_str("null"),
        V::Tag(t, inner) => {
            let _ = write!(out, "{t}(");
            diag(inner, out);
            out.push(')');
        }
        V::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                diag(x, out);
            }
            out.push(']');
        }
        V::Map(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                diag(k, out);
                out.push_str(": ");
                diag(x, out);
            }
            out.push('}');
        }
        _ => out.push_str("undefined"),
    }
}

pub fn hexdump(p: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in p.chunks(16).enumerate() {
        let _ = write!(s, "{:04x}  ", i * 16);
        for b in chunk {
            let _ = write!(s, "{b:02x} ");
        }
        for _ in chunk.len()..16 {
            s.push_str("   ");
        }
        s.push(' ');
        for &b in chunk {
            s.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' });
        }
        s.push('\n');
    }
    s.trim_end().to_string()
}

/// The status line, e.g. "2.05 Content".
pub fn status_line(m: &Message) -> String {
    m.code.to_string()
}

/// Options one per line, with names and rendered values.
pub fn render_options(m: &Message) -> String {
    let reg = Registry::standard();
    let mut s = String::new();
    for (name, value) in m.options.describe(reg) {
        let _ = writeln!(s, "  {name}: {value}");
    }
    s
}

/// Full rendering for output: payload pretty-printed.
pub fn render_body(m: &Message) -> String {
    render_payload(m.options.get_uint(num::CONTENT_FORMAT), &m.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_diagnostic() {
        // {1: "a", "b": [h'01ff', -2, true, null]}
        let bytes = [0xa2, 0x01, 0x61, b'a', 0x61, b'b', 0x84, 0x42, 0x01, 0xff, 0x21, 0xf5, 0xf6];
        assert_eq!(render_cbor(&bytes), "{1: \"a\", \"b\": [h'01ff', -2, true, null]}");
        // A sequence of two items, and garbage.
        assert_eq!(render_cbor(&[0x01, 0x02]), "1,\n2");
        assert!(render_cbor(&[0x1f]).contains("invalid CBOR"));
    }

    #[test]
    fn json_and_text() {
        assert_eq!(render_payload(Some(50), br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(render_payload(None, b"plain"), "plain");
        assert!(render_payload(None, &[0xff, 0x00]).starts_with("0000  ff 00"));
    }
}
