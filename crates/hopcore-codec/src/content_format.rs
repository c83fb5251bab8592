//! Content-Format numbers and names (RFC 7252 §12.3 and the IANA registry).

const FORMATS: &[(u16, &str)] = &[
    (0, "text/plain;charset=utf-8"),
    (16, "application/cose;cose-type=\"cose-encrypt0\""),
    (40, "application/link-format"),
    (41, "application/xml"),
    (42, "application/octet-stream"),
    (47, "application/exi"),
    (50, "application/json"),
    (51, "application/json-patch+json"),
    (52, "application/merge-patch+json"),
    (60, "application/cbor"),
    (61, "application/cwt"),
    (62, "application/multipart-core"),
    (63, "application/cbor-seq"),
    (64, "application/edhoc+cbor-seq"),
    (110, "application/senml+json"),
    (112, "application/senml+cbor"),
    (10001, "application/oscore"),
];

pub const TEXT_PLAIN: u16 = 0;
pub const LINK_FORMAT: u16 = 40;
pub const OCTET_STREAM: u16 = 42;
pub const JSON: u16 = 50;
pub const CBOR: u16 = 60;

/// The media type of a Content-Format number.
pub fn name(cf: u16) -> Option<&'static str> {
    FORMATS.iter().find(|(n, _)| *n == cf).map(|(_, s)| *s)
}

/// Parses a number or a media type (also short forms such as "text", "json", "cbor").
pub fn parse(s: &str) -> Result<u16, String> {
    if let Ok(n) = s.parse::<u16>() {
        return Ok(n);
    }
    let lower = s.trim().to_ascii_lowercase();
    let short = match lower.as_str() {
        "text" | "text/plain" => Some(TEXT_PLAIN),
        "link" | "link-format" => Some(LINK_FORMAT),
        "json" => Some(JSON),
        "cbor" => Some(CBOR),
        "octet-stream" | "binary" => Some(OCTET_STREAM),
        _ => None,
    };
    short.or_else(|| FORMATS.iter().find(|(_, n)| *n == lower).map(|(c, _)| *c)).ok_or_else(|| {
        format!("unknown content-format {s:?} (use a number or e.g. text/plain, application/json, application/cbor)")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::parse("application/json"), Ok(50));
        assert_eq!(super::parse("cbor"), Ok(60));
        assert_eq!(super::parse("112"), Ok(112));
        assert!(super::parse("image/png").is_err());
        assert_eq!(super::name(40), Some("application/link-format"));
    }
}
