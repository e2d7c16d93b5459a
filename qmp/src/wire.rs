//! The QMP wire format: one JSON object per line, as QEMU speaks it.
//!
//! Shared by the client (this crate) and by refvmm's monitor (the server side),
//! so both ends agree on exactly one definition of a greeting, a command, a
//! reply and an event.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The greeting a QMP server sends first: `{"QMP": {"version": ..., "capabilities": []}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Greeting {
    #[serde(rename = "QMP")]
    pub qmp: GreetingBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreetingBody {
    pub version: Value,
    #[serde(default)]
    pub capabilities: Vec<Value>,
}

/// A command sent to the server: `{"execute": NAME, "arguments": {...}, "id": N}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub execute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
}

/// The error member of a failed reply: `{"class": "GenericError", "desc": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub class: String,
    pub desc: String,
}

/// The time stamp QEMU puts on every event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub microseconds: i64,
}

/// One message from the server, once the greeting is past.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `{"return": ..., "id": ...}`
    Return { value: Value, id: Option<Value> },
    /// `{"error": {...}, "id": ...}`
    Error { error: ErrorBody, id: Option<Value> },
    /// `{"event": NAME, "data": {...}, "timestamp": {...}}`
    Event(Event),
}

/// An asynchronous event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    pub timestamp: Timestamp,
}

/// Why a line is not a QMP server message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a QMP message (no return, error or event member): {0}")]
    Shape(String),
}

impl ServerMessage {
    /// Parses one line the server sent.
    pub fn parse(line: &str) -> Result<Self, WireError> {
        let mut obj: Map<String, Value> = serde_json::from_str(line)?;
        let id = obj.remove("id");
        if let Some(value) = obj.remove("return") {
            return Ok(Self::Return { value, id });
        }
        if let Some(err) = obj.remove("error") {
            let error: ErrorBody = serde_json::from_value(err)?;
            return Ok(Self::Error { error, id });
        }
        if obj.contains_key("event") {
            let event: Event = serde_json::from_value(Value::Object(obj))?;
            return Ok(Self::Event(event));
        }
        Err(WireError::Shape(line.chars().take(200).collect()))
    }

    /// Serialises the message as one line, without the trailing newline.
    pub fn to_line(&self) -> String {
        let v = match self {
            Self::Return { value, id } => with_id(serde_json::json!({ "return": value }), id),
            Self::Error { error, id } => with_id(serde_json::json!({ "error": error }), id),
            Self::Event(ev) => serde_json::to_value(ev).expect("event serialises"),
        };
        v.to_string()
    }
}

fn with_id(mut v: Value, id: &Option<Value>) -> Value {
    if let (Some(id), Some(obj)) = (id, v.as_object_mut()) {
        obj.insert("id".into(), id.clone());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_and_event_round_trip() {
        let r = ServerMessage::Return {
            value: serde_json::json!({"status": "running"}),
            id: Some(7.into()),
        };
        assert_eq!(ServerMessage::parse(&r.to_line()).unwrap(), r);
        let e = ServerMessage::Event(Event {
            event: "STOP".into(),
            data: Value::Null,
            timestamp: Timestamp {
                seconds: 1,
                microseconds: 2,
            },
        });
        assert_eq!(ServerMessage::parse(&e.to_line()).unwrap(), e);
    }

    #[test]
    fn rejects_a_line_that_is_no_message() {
        assert!(matches!(
            ServerMessage::parse("{\"x\":1}"),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(
            ServerMessage::parse("garbage"),
            Err(WireError::Json(_))
        ));
    }
}
