//! The `migrate` command's `channels` argument: finds the `main` and `cpr`
//! entries and checks their addresses, with QEMU's refusal messages.

use std::path::PathBuf;

use serde_json::Value;

/// The two channel paths of a cpr-transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    pub main: PathBuf,
    pub cpr: PathBuf,
}

/// Parses the arguments of `migrate`. The error is the QMP error description.
pub fn parse(args: &Value) -> Result<Channels, String> {
    if args.get("uri").is_some() {
        return Err("refvmm needs the channels argument".into());
    }
    let Some(list) = args.get("channels") else {
        return Err("Need either 'uri' or 'channels' argument".into());
    };
    let list = list
        .as_array()
        .ok_or("Invalid parameter type for 'channels', expected: array")?;
    let mut main = None;
    let mut cpr = None;
    for entry in list {
        let kind = entry
            .get("channel-type")
            .and_then(Value::as_str)
            .ok_or("Parameter 'channel-type' is missing")?;
        let addr = entry.get("addr").ok_or("Parameter 'addr' is missing")?;
        let slot = match kind {
            "main" => &mut main,
            "cpr" => &mut cpr,
            other => {
                return Err(format!(
                    "Parameter 'channel-type' does not accept value '{other}'"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("Channel list has more than one {kind} entry"));
        }
        *slot = Some(addr);
    }
    let main = main.ok_or("missing 'main' migration channel")?;
    let cpr = cpr.ok_or("missing 'cpr' migration channel")?;
    let cpr = unix_path(cpr).ok_or("bad cpr channel address; must be unix")?;
    let main = unix_path(main).ok_or("Migration requires streamable transport (eg unix)")?;
    Ok(Channels { main, cpr })
}

/// The path of a `{"transport":"socket","type":"unix","path":P}` address.
fn unix_path(addr: &Value) -> Option<PathBuf> {
    let is = |k: &str, v: &str| addr.get(k).and_then(Value::as_str) == Some(v);
    if !is("transport", "socket") || !is("type", "unix") {
        return None;
    }
    let path = addr.get("path").and_then(Value::as_str)?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn unix(p: &str) -> Value {
        json!({"transport": "socket", "type": "unix", "path": p})
    }

    #[test]
    fn finds_both_channels() {
        let args = json!({"channels": [
            {"channel-type": "main", "addr": unix("/m")},
            {"channel-type": "cpr", "addr": unix("/c")},
        ]});
        assert_eq!(
            parse(&args).unwrap(),
            Channels {
                main: "/m".into(),
                cpr: "/c".into()
            }
        );
    }

    #[rstest]
    #[case(json!({"uri": "unix:/x"}), "refvmm needs the channels argument")]
    #[case(json!({"channels": [{"channel-type": "cpr", "addr": unix("/c")}]}), "missing 'main' migration channel")]
    #[case(json!({"channels": [{"channel-type": "main", "addr": unix("/m")}]}), "missing 'cpr' migration channel")]
    #[case(json!({"channels": [
        {"channel-type": "main", "addr": unix("/m")},
        {"channel-type": "cpr", "addr": {"transport": "socket", "type": "inet", "host": "h", "port": "1"}},
    ]}), "bad cpr channel address; must be unix")]
    #[case(json!({"channels": [
        {"channel-type": "main", "addr": {"transport": "file", "filename": "/f", "offset": 0}},
        {"channel-type": "cpr", "addr": unix("/c")},
    ]}), "Migration requires streamable transport (eg unix)")]
    #[case(json!({"channels": [
        {"channel-type": "main", "addr": unix("/m")},
        {"channel-type": "main", "addr": unix("/m2")},
    ]}), "Channel list has more than one main entry")]
    fn refuses(#[case] args: Value, #[case] desc: &str) {
        assert_eq!(parse(&args).unwrap_err(), desc);
    }
}
