//! CoRE Link Format (RFC 6690) for /.well-known/core.

use std::fmt::Write;

use super::resource::Attributes;

/// The path of the discovery resource (RFC 6690 §4).
pub const WELL_KNOWN_CORE: &str = "/.well-known/core";

/// Renders the links of `resources` (path, attributes) that match every query filter, in the
/// order given (RFC 6690 §5).
pub fn render<'a>(resources: impl IntoIterator<Item = (&'a str, &'a Attributes)>, queries: &[&str]) -> String {
    let mut out = String::new();
    for (path, attrs) in resources {
        if attrs.hidden || !queries.iter().all(|q| matches_filter(path, attrs, q)) {
            continue;
        }
        if !out.is_empty() {
            // RFC 6690 §2: links are separated by ",".
            out.push(',');
        }
        write_link(&mut out, path, attrs);
    }
    out
}

fn write_link(out: &mut String, path: &str, a: &Attributes) {
    out.push('<');
    encode_path(out, path);
    out.push('>');
    if !a.resource_types.is_empty() {
        // RFC 6690 §3.1: rt is a quoted, space-separated list.
        let _ = write!(out, ";rt=");
        quoted(out, &a.resource_types.join(" "));
    }
    if !a.interfaces.is_empty() {
        // RFC 6690 §3.2.
        let _ = write!(out, ";if=");
        quoted(out, &a.interfaces.join(" "));
    }
    match a.content_formats.as_slice() {
        [] => {}
        // RFC 7252 §7.2.1: a single cardinal, or a quoted space-separated list.
        [one] => {
            let _ = write!(out, ";ct={one}");
        }
        many => {
            let list: Vec<String> = many.iter().map(u16::to_string).collect();
            let _ = write!(out, ";ct=\"{}\"", list.join(" "));
        }
    }
    if let Some(sz) = a.max_size {
        // RFC 6690 §3.3.
        let _ = write!(out, ";sz={sz}");
    }
    if let Some(t) = &a.title {
        let _ = write!(out, ";title=");
        quoted(out, t);
    }
    if a.observable {
        // RFC 7641 §6: the "obs" attribute has no value.
        out.push_str(";obs");
    }
}

/// Percent-encodes everything outside pchar and "/" (RFC 3986 §3.3), as the link target is a
/// URI-reference (RFC 6690 §2).
fn encode_path(out: &mut String, path: &str) {
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A quoted-string with '"' and '\' escaped (RFC 6690 §2, quoted-string of RFC 2616).
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// RFC 6690 §4.1 query filtering: `name=value` matches when one of the (space-separated)
/// values of the attribute equals `value`, or starts with it when `value` ends in '*'; `href`
/// filters on the link target. A bare `name` matches when the attribute is present.
fn matches_filter(path: &str, a: &Attributes, query: &str) -> bool {
    let (name, pattern) = match query.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (query, None),
    };
    let values: Vec<String> = match name {
        "href" => vec![path.to_string()],
        "rt" => a.resource_types.iter().flat_map(|s| s.split_whitespace()).map(String::from).collect(),
        "if" => a.interfaces.iter().flat_map(|s| s.split_whitespace()).map(String::from).collect(),
        "ct" => a.content_formats.iter().map(u16::to_string).collect(),
        "sz" => a.max_size.iter().map(u64::to_string).collect(),
        "title" => a.title.iter().cloned().collect(),
        "obs" if a.observable => vec![String::new()],
        _ => Vec::new(),
    };
    match pattern {
        None => !values.is_empty(),
        Some(p) => match p.strip_suffix('*') {
            Some(prefix) => values.iter().any(|v| v.starts_with(prefix)),
            None => values.iter().any(|v| v == p),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_filters() {
        let hello = Attributes::new().content_format(0).title("Hi \"there\"");
        let time = Attributes::new().resource_type("clock utc").content_format(0).observable();
        let multi = Attributes::new().content_format(0).content_format(50).max_size(4096);
        let hidden = Attributes::new().hidden();
        let all = [("/hello", &hello), ("/time", &time), ("/a b", &multi), ("/secret", &hidden)];
        assert_eq!(
            render(all, &[]),
            "</hello>;ct=0;title=\"Hi \\\"there\\\"\",</time>;rt=\"clock utc\";ct=0;obs,</a%20b>;ct=\"0 50\";sz=4096"
        );
        assert_eq!(render(all, &["rt=utc"]), "</time>;rt=\"clock utc\";ct=0;obs");
        assert_eq!(render(all, &["rt=clo*"]), "</time>;rt=\"clock utc\";ct=0;obs");
        assert_eq!(render(all, &["href=/h*"]), "</hello>;ct=0;title=\"Hi \\\"there\\\"\"");
        assert_eq!(render(all, &["ct=50"]), "</a%20b>;ct=\"0 50\";sz=4096");
        assert_eq!(render(all, &["obs"]), "</time>;rt=\"clock utc\";ct=0;obs");
        assert_eq!(render(all, &["ct=0", "obs"]), "</time>;rt=\"clock utc\";ct=0;obs");
        assert_eq!(render(all, &["nothing=1"]), "");
    }
}
