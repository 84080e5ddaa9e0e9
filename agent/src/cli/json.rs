//! `--output json`: the API's document, indented, otherwise unchanged.
//!
//! Re-indented as text rather than parsed and printed again: a parsed
//! `serde_json::Value` sorts object keys (the workspace's serde_json
//! keeps no order), which would show fields in another order than the
//! API sends them. The text is checked to be JSON first.

/// `text` (one JSON document) indented by two spaces per level, as
/// `serde_json::to_string_pretty` lays it out, keys in the order given.
pub fn pretty(text: &str) -> Result<String, serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    // Just opened a container: its first element goes on a new line, but
    // an empty one stays `{}` / `[]`.
    let mut opened = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        let closing = c == '}' || c == ']';
        if opened && !closing {
            newline(&mut out, depth);
        }
        match c {
            '{' | '[' => {
                out.push(c);
                depth += 1;
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if !opened {
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            '"' => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
        opened = c == '{' || c == '[';
    }
    Ok(out)
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    out.extend(std::iter::repeat_n("  ", depth));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn laid_out_as_serde_json_does() {
        let v = json!({"a": [1, {"b": null, "c": []}, {}], "d": "x, y: {z}", "e": {"f": true}});
        let compact = v.to_string();
        assert_eq!(
            pretty(&compact).unwrap(),
            serde_json::to_string_pretty(&v).unwrap()
        );
        assert_eq!(pretty(" [ ] ").unwrap(), "[]");
        assert_eq!(pretty("\"a\\\"b\"").unwrap(), "\"a\\\"b\"");
    }

    #[test]
    fn keys_keep_their_order_and_strings_their_text() {
        let text = r#"{"zeta":1,"alpha":{"s":"tab\t \\\" ]}","n":-1.5e3}}"#;
        let out = pretty(text).unwrap();
        assert_eq!(
            out,
            "{\n  \"zeta\": 1,\n  \"alpha\": {\n    \"s\": \"tab\\t \\\\\\\" ]}\",\n    \"n\": -1.5e3\n  }\n}"
        );
        let a: Value = serde_json::from_str(text).unwrap();
        let b: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(a, b);
        assert!(out.find("zeta") < out.find("alpha"));
    }

    #[test]
    fn what_is_not_json_is_refused() {
        assert!(pretty("{\"a\": }").is_err());
        assert!(pretty("").is_err());
        assert!(pretty("-----BEGIN CERTIFICATE-----").is_err());
    }
}
