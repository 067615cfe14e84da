//! Per-host variable values: declared defaults, then `--values FILE.json`,
//! then `--set NAME=VALUE`; every problem is reported at once.

use std::collections::BTreeMap;
use std::path::Path;

use bundle_spec::names::VarName;
use bundle_spec::spec::Variable;
use bundle_spec::validate::compile_pattern;

/// Resolves the value of every declared variable. Returns all problems:
/// unknown names, malformed `--set`, unreadable values file, missing
/// required values, values not matching their pattern.
pub fn resolve(
    declared: &BTreeMap<VarName, Variable>,
    values_file: Option<&Path>,
    sets: &[String],
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut problems = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (name, v) in declared {
        if let Some(d) = &v.default {
            values.insert(name.to_string(), d.clone());
        }
    }
    let declared_list = || {
        if declared.is_empty() {
            "this bundle declares no variables".to_owned()
        } else {
            format!(
                "declared: {}",
                declared
                    .keys()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let mut given = |name: &str, value: String, origin: &str, problems: &mut Vec<String>| {
        if declared.keys().any(|k| k.as_str() == name) {
            values.insert(name.to_owned(), value);
        } else {
            problems.push(format!(
                "{origin}: no variable {name} in this bundle ({})",
                declared_list()
            ));
        }
    };
    if let Some(path) = values_file {
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&b)
                    .map_err(|e| e.to_string())
            }) {
            Ok(map) => {
                for (k, v) in map {
                    match v {
                        serde_json::Value::String(s) => {
                            given(&k, s, &path.display().to_string(), &mut problems)
                        }
                        other => problems.push(format!(
                            "{}: {k}: expected a string value, got {other}",
                            path.display()
                        )),
                    }
                }
            }
            Err(e) => problems.push(format!("--values {}: {e}", path.display())),
        }
    }
    for s in sets {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                given(k, v.to_owned(), &format!("--set {k}"), &mut problems)
            }
            _ => problems.push(format!("--set {s:?}: expected NAME=VALUE")),
        }
    }
    for (name, v) in declared {
        let about = v
            .description
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        match values.get(name.as_str()) {
            None if v.required => problems.push(format!(
                "variable {name}{about} is required: pass --set {name}=VALUE or --values FILE.json"
            )),
            None => {}
            Some(value) => {
                if let Some(p) = &v.pattern {
                    match compile_pattern(p) {
                        Ok(re) if re.is_match(value) => {}
                        Ok(_) => problems.push(format!(
                            "variable {name}{about}: {value:?} does not match the pattern {p:?}"
                        )),
                        Err(e) => problems.push(format!("variable {name}: {e}")),
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeMap<VarName, Variable> {
        BTreeMap::from([
            (
                "POD_CIDR".parse().unwrap(),
                Variable {
                    description: Some("pod subnet".into()),
                    required: true,
                    pattern: Some("^[0-9.]+/[0-9]+$".into()),
                    default: None,
                },
            ),
            (
                "CLUSTER_DNS".parse().unwrap(),
                Variable {
                    default: Some("10.32.0.10".into()),
                    ..Variable::default()
                },
            ),
        ])
    }

    #[test]
    fn defaults_then_sets() {
        let v = resolve(&declared(), None, &["POD_CIDR=10.0.0.0/24".into()]).unwrap();
        assert_eq!(v["POD_CIDR"], "10.0.0.0/24");
        assert_eq!(v["CLUSTER_DNS"], "10.32.0.10");
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let errs = resolve(&declared(), None, &["NODE=1".into(), "bad".into()]).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("no variable NODE"));
        assert!(errs[1].contains("expected NAME=VALUE"));
        assert!(errs[2].contains("POD_CIDR (pod subnet) is required"));
        let errs = resolve(&declared(), None, &["POD_CIDR=abc".into()]).unwrap_err();
        assert!(errs[0].contains("does not match the pattern"), "{errs:?}");
    }
}
