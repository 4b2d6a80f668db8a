//! The end-of-run summary as a table for people: the JSON summary flattened into
//! `key  value` rows (nested objects as dotted keys), keys aligned. `--json` prints the
//! JSON line instead, for scripts.

use serde_json::Value;

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        Value::Null => out.push((prefix.to_string(), "-".into())),
        Value::String(s) if s.is_empty() => out.push((prefix.to_string(), "-".into())),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Array(a) if a.is_empty() => out.push((prefix.to_string(), "-".into())),
        Value::Array(a) => {
            let items: Vec<String> =
                a.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect();
            out.push((prefix.to_string(), items.join("; ")));
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// `title`, then one aligned row per leaf of `summary`.
pub fn table(title: &str, summary: &Value) -> String {
    let mut rows = Vec::new();
    flatten("", summary, &mut rows);
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("{title}\n{}\n", "-".repeat(title.len()));
    for (k, v) in rows {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_are_dotted_and_aligned() {
        let v = serde_json::json!({"lost": 0, "latency_ms": {"p50": 1.5, "p99": 3.0}, "first_error": null,
            "problems": ["a", "b"]});
        let t = table("herald-load summary", &v);
        assert!(t.starts_with("herald-load summary\n-------------------\n"), "{t}");
        assert!(t.contains("latency_ms.p50  1.5\n"), "{t}");
        assert!(t.contains("lost            0\n"), "{t}");
        assert!(t.contains("first_error     -\n"), "{t}");
        assert!(t.contains("problems        a; b\n"), "{t}");
    }
}
