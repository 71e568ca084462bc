//! The checks every incoming JSON-RPC message passes before rmcp reads it, over stdio and HTTP
//! alike, so that every request gets an answer.
//!
//! rmcp 3.11 leaves some requests unanswered or answers them with the wrong error (see
//! `docs/MCP.md`, "Protocol edges"): a message nested deeper than serde_json's recursion limit
//! of 128 is taken for unparsable input and dropped without a word; unparsable input is
//! dropped over stdio and answered 415 over HTTP; an Invalid Request error never carries the
//! request's id; and a standard method whose params do not fit (`tools/call` with `arguments`
//! given as an array) is answered "method not found". [`check`] answers all of these itself
//! and hands rmcp only what it reads correctly.

use abathur_core::models::MAX_JSON_DEPTH;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};

use super::reply::ToolError;

/// The largest message the server reads: one stdio line, or one HTTP request body. The
/// largest stored field is 1 MiB of JSON (`abathur_core::limits::MAX_TASK_JSON_BYTES`); a
/// message carries a few fields besides, and JSON string escapes can make text several times
/// longer on the wire.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The levels of a `tools/call` message above its argument values: the message, `params`
/// and `arguments`.
const ENVELOPE_DEPTH: usize = 3;

/// How deep [`check`] reads a message. An argument value may nest [`MAX_JSON_DEPTH`] levels,
/// so this stays below serde_json's recursion limit of 128, and rmcp can read every message
/// that passes.
const READ_DEPTH: usize = MAX_JSON_DEPTH + ENVELOPE_DEPTH;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

/// What to do with one incoming message.
#[derive(Debug)]
pub enum Verdict {
    /// rmcp can read it: here it is.
    Pass(Box<ClientJsonRpcMessage>),
    /// Answer it with this, and do not hand it on.
    Answer(Answer),
    /// A notification that cannot be acted on. JSON-RPC answers no notification, so nothing
    /// is sent.
    Drop,
}

/// The answer to a message refused at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status to send it with.
    pub status: u16,
    /// The JSON-RPC response.
    pub body: Value,
}

/// Checks one message: a stdio line without its newline, or an HTTP request body.
pub fn check(bytes: &[u8]) -> Verdict {
    let bytes = without_bom(bytes);
    let message = match read(bytes) {
        Ok(message) => message,
        Err(e) => {
            tracing::debug!(error = %e, "an incoming message is not JSON");
            return error(400, Value::Null, PARSE_ERROR, format!("Parse error: {e}"));
        }
    };
    let Node::Object(fields) = &message else {
        let what = match message {
            Node::Array(_) => {
                "a batch: MCP takes one JSON-RPC message at a time (batches were removed in \
                 protocol version 2025-06-18)"
            }
            _ => "not a JSON-RPC message: one is a JSON object",
        };
        return invalid_request(Value::Null, what);
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    let id = match field("id") {
        None => None,
        Some(Node::Scalar(id @ Value::String(_))) => Some(id.clone()),
        Some(Node::Scalar(Value::Number(n))) if n.as_i64().is_some() => {
            Some(Value::Number(n.clone()))
        }
        Some(_) => {
            return invalid_request(
                Value::Null,
                "id must be a string or an integer between -2^63 and 2^63-1",
            )
        }
    };
    let reply_id = id.clone().unwrap_or(Value::Null);
    match field("jsonrpc") {
        Some(Node::Scalar(Value::String(v))) if v == "2.0" => {}
        Some(_) => return invalid_request(reply_id, "jsonrpc must be \"2.0\""),
        None => return invalid_request(reply_id, "jsonrpc is missing; it must be \"2.0\""),
    }
    let method = match field("method") {
        Some(Node::Scalar(Value::String(m))) => Some(m.as_str()),
        Some(_) => return invalid_request(reply_id, "method must be a string"),
        None => None,
    };
    let Some(method) = method else {
        // A response to a request of ours (the server sends none today), or nothing at all.
        if id.is_some() && (field("result").is_some() || field("error").is_some()) {
            return pass(bytes, message.depth(), Shape::Unanswered);
        }
        return invalid_request(reply_id, "method is missing");
    };
    // JSON-RPC answers no notification, not even with an error.
    let Some(id) = id else {
        return pass(bytes, message.depth(), Shape::Unanswered);
    };
    let params = match field("params") {
        None | Some(Node::Scalar(Value::Null)) => None,
        Some(Node::Object(params)) => Some(params),
        Some(_) => return invalid_params(id, format!("params of {method} must be an object")),
    };
    if method == "tools/call" {
        if let Some(answer) = check_tool_call(&id, params) {
            return Verdict::Answer(answer);
        }
    }
    let depth = message.depth();
    if depth > READ_DEPTH {
        return invalid_params(
            id,
            format!(
                "params of {method} nest arrays and objects deeper than the limit of \
                 {MAX_JSON_DEPTH} levels"
            ),
        );
    }
    pass(bytes, depth, Shape::Request { id, method })
}

/// `bytes` without the UTF-8 byte order mark some clients start a message with. rmcp does not
/// skip it, so what passes [`check`] must reach rmcp without it.
pub fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// What a message that passed the checks of its envelope is.
enum Shape<'a> {
    Request {
        id: Value,
        method: &'a str,
    },
    /// A notification, or a response to a request of ours: neither is ever answered.
    Unanswered,
}

/// Hands `bytes` to rmcp's own reading, answering what it would misread.
fn pass(bytes: &[u8], depth: usize, shape: Shape<'_>) -> Verdict {
    let Shape::Request { id, method } = shape else {
        if depth > READ_DEPTH {
            tracing::debug!("dropping a notification nested too deep to read");
            return Verdict::Drop;
        }
        return match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
            Ok(message) => Verdict::Pass(Box::new(message)),
            Err(e) => {
                tracing::debug!(error = %e, "dropping a notification rmcp cannot read");
                Verdict::Drop
            }
        };
    };
    match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        // rmcp reads a standard method whose params do not fit as a custom request, and
        // answers it "method not found".
        Ok(ClientJsonRpcMessage::Request(request))
            if matches!(&request.request, ClientRequest::CustomRequest(custom)
                if is_standard_request(&custom.method)) =>
        {
            invalid_params(id, format!("params do not fit {method}"))
        }
        Ok(message) => Verdict::Pass(Box::new(message)),
        Err(e) => invalid_params(id, format!("params do not fit {method}: {e}")),
    }
}

/// The request methods of MCP that rmcp reads into their own types.
fn is_standard_request(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "ping"
            | "completion/complete"
            | "logging/setLevel"
            | "prompts/get"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "server/discover"
            | "subscriptions/listen"
            | "tools/call"
            | "tools/list"
    )
}

/// The shape of a `tools/call`, and the depth of each argument value: a value nested deeper
/// than the store keeps is a tool error naming the argument, as every other bad argument is.
fn check_tool_call(id: &Value, params: Option<&Vec<(String, Node)>>) -> Option<Answer> {
    let params_field =
        |name: &str| params.and_then(|p| p.iter().find(|(k, _)| k == name).map(|(_, v)| v));
    let name = match params_field("name") {
        Some(Node::Scalar(Value::String(name))) => name.as_str(),
        _ => {
            return Some(params_answer(
                id,
                "tools/call needs params.name: the name of the tool, a string",
            ))
        }
    };
    let arguments = match params_field("arguments") {
        None | Some(Node::Scalar(Value::Null)) => return None,
        Some(Node::Object(arguments)) => arguments,
        Some(other) => {
            return Some(params_answer(
                id,
                &format!(
                    "the arguments of {name} must be a JSON object of named arguments, not {}",
                    other.kind()
                ),
            ))
        }
    };
    let (deep, _) = arguments
        .iter()
        .find(|(_, value)| value.depth() > MAX_JSON_DEPTH)?;
    let result = ToolError::argument(format!(
        "invalid arguments for {name}: {deep} nests arrays and objects deeper than the limit \
         of {MAX_JSON_DEPTH} levels"
    ))
    .into_result();
    let mut result = serde_json::to_value(result).unwrap_or(Value::Null);
    // rmcp's own tool results leave out this marker of its internal result type.
    if let Some(fields) = result.as_object_mut() {
        fields.remove("resultType");
    }
    Some(Answer {
        status: 200,
        body: json!({ "jsonrpc": "2.0", "id": id, "result": result }),
    })
}

fn invalid_request(id: Value, why: impl std::fmt::Display) -> Verdict {
    error(400, id, INVALID_REQUEST, format!("Invalid request: {why}"))
}

fn invalid_params(id: Value, why: impl std::fmt::Display) -> Verdict {
    Verdict::Answer(params_answer(&id, &why.to_string()))
}

/// Invalid params are answered with HTTP 200, as rmcp answers those it finds itself.
fn params_answer(id: &Value, why: &str) -> Answer {
    Answer {
        status: 200,
        body: error_body(id.clone(), INVALID_PARAMS, format!("Invalid params: {why}")),
    }
}

fn error(status: u16, id: Value, code: i64, message: String) -> Verdict {
    Verdict::Answer(Answer {
        status,
        body: error_body(id, code, message),
    })
}

fn error_body(id: Value, code: i64, message: String) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

/// The answer to a stdio line longer than [`MAX_MESSAGE_BYTES`]: its id is not read.
pub fn too_large() -> Answer {
    Answer {
        status: 413,
        body: error_body(
            Value::Null,
            INVALID_REQUEST,
            format!(
                "Invalid request: the message is larger than the limit of {} ({MAX_MESSAGE_BYTES} \
                 bytes)",
                abathur_core::limits::bytes(MAX_MESSAGE_BYTES)
            ),
        ),
    }
}

/// A JSON value read down to [`READ_DEPTH`] levels; what lies deeper is checked for syntax
/// and then left out.
#[derive(Debug)]
enum Node {
    Scalar(Value),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
    /// An array or object beyond the levels read.
    TooDeep,
}

impl Node {
    /// How many levels of arrays and objects it nests, counted as
    /// [`abathur_core::models::check_json_depth`] counts them; more than [`READ_DEPTH`] when it
    /// holds a [`Node::TooDeep`].
    fn depth(&self) -> usize {
        match self {
            Node::Scalar(_) => 0,
            Node::Array(items) => 1 + items.iter().map(Node::depth).max().unwrap_or(0),
            Node::Object(fields) => 1 + fields.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            Node::TooDeep => READ_DEPTH + 1,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Scalar(Value::String(_)) => "a string",
            Node::Scalar(Value::Number(_)) => "a number",
            Node::Scalar(Value::Bool(_)) => "a boolean",
            Node::Scalar(_) => "null",
            Node::Array(_) | Node::TooDeep => "an array",
            Node::Object(_) => "an object",
        }
    }
}

fn read(bytes: &[u8]) -> Result<Node, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let node = Levels(READ_DEPTH).deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

/// Reads a value with this many levels of arrays and objects still to keep. Beyond them, the
/// value is skipped with [`IgnoredAny`], which serde_json reads without recursion, so a
/// message nested 10,000 deep costs neither stack nor serde_json's recursion limit.
#[derive(Clone, Copy)]
struct Levels(usize);

impl<'de> DeserializeSeed<'de> for Levels {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Levels {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        if self.0 == 0 {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Node::TooDeep);
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Levels(self.0 - 1))? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        if self.0 == 0 {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Node::TooDeep);
        }
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            fields.push((key, map.next_value_seed(Levels(self.0 - 1))?));
        }
        Ok(Node::Object(fields))
    }
}

/// The JSON-RPC error of an answer, for logs.
pub fn describe(answer: &Answer) -> String {
    answer
        .body
        .get("error")
        .and_then(Value::as_object)
        .and_then(|e: &Map<String, Value>| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("a tool error")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Answer {
        match check(text.as_bytes()) {
            Verdict::Answer(answer) => answer,
            other => panic!("{text} was not answered at the edge: {other:?}"),
        }
    }

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    fn call(arguments: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"task_enqueue","arguments":{arguments}}}}}"#
        )
    }

    #[test]
    fn an_argument_nested_past_the_limit_is_a_tool_error_naming_it_at_any_depth() {
        for levels in [MAX_JSON_DEPTH + 1, 127, 128, 10_000, 1_000_000] {
            let a = answer(&call(&format!(
                r#"{{"description":"x","input":{}}}"#,
                nested(levels)
            )));
            assert_eq!(a.status, 200);
            assert_eq!(a.body["id"], 7);
            assert_eq!(a.body["result"]["isError"], true, "{}", a.body);
            let text = a.body["result"]["content"][0]["text"].as_str().unwrap();
            let tool: Value = serde_json::from_str(text).unwrap();
            assert_eq!(tool["error"]["kind"], "invalid_argument");
            let message = tool["error"]["message"].as_str().unwrap();
            assert!(message.contains("input"), "{message}");
            assert!(message.contains(&MAX_JSON_DEPTH.to_string()), "{message}");
        }
    }

    #[test]
    fn an_argument_at_the_limit_passes_to_rmcp() {
        let text = call(&format!(
            r#"{{"description":"x","input":{}}}"#,
            nested(MAX_JSON_DEPTH)
        ));
        assert!(matches!(check(text.as_bytes()), Verdict::Pass(_)));
    }

    #[test]
    fn each_malformed_request_gets_the_json_rpc_error_with_its_id() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"#,
                Value::Null,
                PARSE_ERROR,
                400,
            ),
            ("nope", Value::Null, PARSE_ERROR, 400),
            (
                r#"{"id":2,"method":"tools/list"}"#,
                json!(2),
                INVALID_REQUEST,
                400,
            ),
            (
                r#"{"jsonrpc":"1.0","id":"a","method":"tools/list"}"#,
                json!("a"),
                INVALID_REQUEST,
                400,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3}"#,
                json!(3),
                INVALID_REQUEST,
                400,
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"method":5}"#,
                json!(4),
                INVALID_REQUEST,
                400,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#,
                Value::Null,
                PARSE_ERROR,
                400,
            ),
            (
                r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#,
                Value::Null,
                INVALID_REQUEST,
                400,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                Value::Null,
                INVALID_REQUEST,
                400,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                Value::Null,
                INVALID_REQUEST,
                400,
            ),
            (
                r#"[{"jsonrpc":"2.0","id":5,"method":"ping"}]"#,
                Value::Null,
                INVALID_REQUEST,
                400,
            ),
            ("[]", Value::Null, INVALID_REQUEST, 400),
            ("5", Value::Null, INVALID_REQUEST, 400),
            (
                r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"task_list","arguments":[]}}"#,
                json!(6),
                INVALID_PARAMS,
                200,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"task_list","arguments":"x"}}"#,
                json!(7),
                INVALID_PARAMS,
                200,
            ),
            (
                r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}"#,
                json!(8),
                INVALID_PARAMS,
                200,
            ),
            (
                r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":[1]}"#,
                json!(9),
                INVALID_PARAMS,
                200,
            ),
            (
                r#"{"jsonrpc":"2.0","id":10,"method":"tools/list","params":"x"}"#,
                json!(10),
                INVALID_PARAMS,
                200,
            ),
            (
                r#"{"jsonrpc":"2.0","id":11,"method":"initialize","params":{}}"#,
                json!(11),
                INVALID_PARAMS,
                200,
            ),
        ];
        for (text, id, code, status) in cases {
            let a = answer(text);
            assert_eq!(a.body["error"]["code"], code, "{text}: {}", a.body);
            assert_eq!(a.body["id"], id, "{text}: {}", a.body);
            assert_eq!(a.body["jsonrpc"], "2.0", "{text}");
            assert_eq!(a.status, status, "{text}");
        }
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":12,"method":"tools/list","params":{{"x":{}}}}}"#,
            nested(10_000)
        );
        let a = answer(&deep);
        assert_eq!(a.body["error"]["code"], INVALID_PARAMS, "{}", a.body);
        assert!(a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100 levels"));
    }

    #[test]
    fn notifications_are_never_answered_and_good_requests_pass() {
        for text in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":[1]}"#,
            r#"{"jsonrpc":"2.0","method":"vendor/thing"}"#,
        ] {
            assert!(
                !matches!(check(text.as_bytes()), Verdict::Answer(_)),
                "{text}"
            );
        }
        let deep = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{}}}"#,
            nested(10_000)
        );
        assert!(matches!(check(deep.as_bytes()), Verdict::Drop));
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"ping\"}",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"task_list","arguments":null}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"vendor/custom","params":{"a":1}}"#,
        ] {
            assert!(matches!(check(text.as_bytes()), Verdict::Pass(_)), "{text}");
        }
    }
}
