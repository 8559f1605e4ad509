//! Function calling and `response_format` through real HTTP: for secret keys with the `tools`
//! scope only. An OpenAI-compatible upstream gets them byte for byte and its `tool_calls` come
//! back as they were sent; Anthropic and Gemini upstreams get them translated into their own
//! shapes, and their tool use comes back as OpenAI `tool_calls` chunks ending in
//! `finish_reason: "tool_calls"`. Site keys and keys without the scope are refused before any
//! upstream call, and so are malformed tools.

use confab_server::config::UpstreamKind;
use confab_server::keys::KeySpec;
use confab_server::store::Scope;
use confab_tests::{
    MockUpstream, Reply, Step, TestRelay, TestRelayBuilder, json_body, read_events,
};
use serde_json::{Value, json};

/// `tools` as a client wrote it, spacing and key order included.
const TOOLS: &str = r#"[ {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}, "strict": true}} ]"#;

fn tools() -> Value {
    serde_json::from_str(TOOLS).unwrap()
}

fn ask(stream: bool) -> Value {
    json!({
        "model": "model-a",
        "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": tools(),
        "tool_choice": "auto",
        "max_tokens": 100,
    })
}

/// The conversation after the client ran the call: the call and its result, sent back.
fn with_result() -> Value {
    json!({
        "model": "model-a",
        "stream": true,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22 C and sunny"},
        ],
        "tools": tools(),
        "max_tokens": 100,
    })
}

/// A secret key with `scopes`.
async fn key(relay: &TestRelay, scopes: &[Scope]) -> String {
    let spec = KeySpec { name: "backend".into(), scopes: scopes.to_vec(), ..KeySpec::default() };
    relay.create_key(spec).await.1
}

async fn send(relay: &TestRelay, secret: &str, body: &Value) -> reqwest::Response {
    relay.chat_as(secret, None).json(body).send().await.unwrap()
}

/// A stream's chunks, checked to end in `[DONE]`.
async fn chunks(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    assert_eq!(events.last().unwrap().data, "[DONE]", "{events:?}");
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect()
}

/// The deltas of the chunks that carry `tool_calls`, and the one finish reason.
fn tool_calls_and_finish(chunks: &[Value]) -> (Vec<Value>, String) {
    let deltas = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .flat_map(|calls| calls.as_array().unwrap().clone())
        .collect();
    let finishes: Vec<&str> =
        chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finishes.len(), 1, "{chunks:?}");
    (deltas, finishes[0].to_owned())
}

fn anthropic_relay(mock: &MockUpstream) -> TestRelayBuilder {
    TestRelay::builder(mock).config(|c| {
        c.upstreams[0].kind = UpstreamKind::Anthropic;
        c.upstreams[0].base_url = Some(mock.root_url());
    })
}

fn gemini_relay(mock: &MockUpstream) -> TestRelayBuilder {
    let origin = mock.base_url.strip_suffix("/v1").expect("the mock serves under /v1");
    let root = format!("{origin}/v1beta");
    TestRelay::builder(mock).config(move |c| {
        c.upstreams[0].kind = UpstreamKind::Gemini;
        c.upstreams[0].base_url = Some(root);
    })
}

const OPENAI_CALL: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#;
const OPENAI_ARGS: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}]}"#;

#[tokio::test]
async fn a_key_with_the_tools_scope_passes_tools_through_byte_for_byte_and_gets_the_calls_back() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![
        Step::Raw(OPENAI_CALL),
        Step::Raw(OPENAI_ARGS),
        Step::Finish("tool_calls"),
        Step::Usage { prompt: 40, completion: 9 },
        Step::Done,
    ]));
    let relay = TestRelay::start(&mock).await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let body = format!(
        r#"{{"model":"model-a","stream":true,"messages":[{{"role":"user","content":"Weather in Paris?"}}],"tools":{TOOLS},"tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}},"parallel_tool_calls":false}}"#
    );
    let response = relay
        .chat_as(&secret, None)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    // The chunks with the calls pass on byte for byte but for the model.
    let relayed = |raw: &str| raw.replace(r#""model":"mock""#, r#""model":"model-a""#);
    assert_eq!(events[0].data, relayed(OPENAI_CALL));
    assert_eq!(events[1].data, relayed(OPENAI_ARGS));
    assert_eq!(events.last().unwrap().data, "[DONE]");

    let upstream = &mock.requests()[0];
    let sent = std::str::from_utf8(&upstream.raw_body).unwrap();
    assert!(sent.contains(&format!(r#""tools":{TOOLS}"#)), "{sent}");
    assert!(
        sent.contains(
            r#""tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false"#
        ),
        "{sent}"
    );
}

#[tokio::test]
async fn a_whole_answer_that_only_calls_tools_passes_with_null_content() {
    let mock = MockUpstream::start().await;
    let answer = r#"{"id":"chatcmpl-2","object":"chat.completion","created":1,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":40,"completion_tokens":9,"total_tokens":49}}"#;
    mock.push(Reply::Stream(vec![Step::Raw(answer)]));
    let relay = TestRelay::start(&mock).await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let response = send(&relay, &secret, &ask(false)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(text, answer.replace(r#""model":"mock""#, r#""model":"model-a""#));
}

#[tokio::test]
async fn a_result_sent_back_and_a_response_format_reach_an_openai_upstream_as_sent() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["It is 22 C."], (50, 5)));
    mock.push(Reply::answer(&["{\"city\":\"Paris\"}"], (20, 5)));
    let relay = TestRelay::start(&mock).await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let answered = chunks(send(&relay, &secret, &with_result()).await).await;
    assert!(answered.iter().any(|c| c["choices"][0]["delta"]["content"] == "It is 22 C."));
    let format = json!({"type": "json_schema", "json_schema": {"name": "city",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let body = json!({"model": "model-a", "messages": [{"role": "user", "content": "Capital of France?"}],
        "response_format": format});
    let (status, _) = json_body(send(&relay, &secret, &body).await).await;
    assert_eq!(status, 200);

    let requests = mock.requests();
    assert_eq!(requests[0].body["messages"], with_result()["messages"]);
    assert_eq!(requests[1].body["response_format"], format);
}

#[tokio::test]
async fn tools_and_results_are_translated_for_anthropic_and_its_tool_use_streams_back_as_tool_calls()
 {
    let mock = MockUpstream::start().await;
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "model": "claude", "usage": {"input_tokens": 50, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use",
            "id": "toolu_2", "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}}),
        json!({"type": "message_stop"}),
    ];
    let sse: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    mock.push(Reply::Stream(vec![Step::Bytes(sse)]));
    let relay = anthropic_relay(&mock).start().await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let mut body = with_result();
    body["messages"].as_array_mut().unwrap().push(json!({"role": "user", "content": "And Oslo?"}));
    body["tool_choice"] = json!("required");
    let chunks = chunks(send(&relay, &secret, &body).await).await;
    let (calls, finish) = tool_calls_and_finish(&chunks);
    assert_eq!(
        calls,
        [
            json!({"index": 0, "id": "toolu_2", "type": "function",
                   "function": {"name": "get_weather", "arguments": ""}}),
            json!({"index": 0, "function": {"arguments": "{\"city\": "}}),
            json!({"index": 0, "function": {"arguments": "\"Oslo\"}"}}),
        ]
    );
    assert_eq!(finish, "tool_calls");
    assert!(chunks.iter().any(|c| c["choices"][0]["delta"]["content"] == "Checking."));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 20);

    let sent = mock.only_request();
    assert_eq!(
        sent["tools"],
        json!([{"name": "get_weather", "description": "The weather in a city now",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"], "additionalProperties": false}}])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1",
                "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "22 C and sunny"},
                {"type": "text", "text": "And Oslo?"}]},
        ])
    );
}

#[tokio::test]
async fn a_response_format_is_anthropics_forced_json_tool_and_comes_back_as_text() {
    let mock = MockUpstream::start().await;
    let message = json!({"id": "msg_3", "type": "message", "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_3", "name": "json_tool_call", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 8}});
    mock.push(Reply::Stream(vec![Step::Bytes(message.to_string())]));
    let relay = anthropic_relay(&mock).start().await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let body = json!({"model": "model-a", "messages": [{"role": "user", "content": "Capital of France?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}});
    let (status, answer) = json_body(send(&relay, &secret, &body).await).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0],
        json!({"index": 0, "finish_reason": "stop",
               "message": {"role": "assistant", "content": "{\"city\":\"Paris\"}"}})
    );
    let sent = mock.only_request();
    assert_eq!(sent["tools"], json!([{"name": "json_tool_call", "input_schema": schema}]));
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "json_tool_call"}));
}

#[tokio::test]
async fn tools_and_results_are_translated_for_gemini_and_its_calls_stream_back_as_tool_calls() {
    let mock = MockUpstream::start().await;
    let call = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 7}, "responseId": "g1"});
    mock.push(Reply::Stream(vec![Step::Bytes(format!("data: {call}\n\n"))]));
    let relay = gemini_relay(&mock).start().await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let mut body = with_result();
    body["messages"].as_array_mut().unwrap().push(json!({"role": "user", "content": "And Oslo?"}));
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let chunks = chunks(send(&relay, &secret, &body).await).await;
    let (calls, finish) = tool_calls_and_finish(&chunks);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let id = calls[0]["id"].as_str().unwrap();
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(
        calls[0],
        json!({"index": 0, "id": id, "type": "function",
               "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}})
    );
    assert_eq!(finish, "tool_calls");

    let sent = mock.only_request();
    assert_eq!(
        sent["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather",
            "description": "The weather in a city now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]}])
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    assert_eq!(
        sent["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": "22 C and sunny"}}},
                {"text": "And Oslo?"}]},
        ])
    );
}

#[tokio::test]
async fn a_response_format_is_geminis_json_mime_type_and_schema() {
    let mock = MockUpstream::start().await;
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "{\"city\": \"Paris\"}"}]},
        "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 6}});
    mock.push(Reply::Stream(vec![Step::Bytes(answer.to_string())]));
    mock.push(Reply::Stream(vec![Step::Bytes(answer.to_string())]));
    let relay = gemini_relay(&mock).start().await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let ask = |format: Value| {
        json!({"model": "model-a", "messages": [{"role": "user", "content": "Capital of France?"}],
               "response_format": format})
    };
    let schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {"city": {"type": "string"}}, "additionalProperties": false});
    for format in [
        json!({"type": "json_object"}),
        json!({"type": "json_schema", "json_schema": {"name": "city", "strict": true, "schema": schema}}),
    ] {
        let (status, answer) = json_body(send(&relay, &secret, &ask(format)).await).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["choices"][0]["message"]["content"], "{\"city\": \"Paris\"}");
    }
    let requests = mock.requests();
    assert_eq!(requests[0].body["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(requests[0].body["generationConfig"].get("responseSchema"), None);
    assert_eq!(
        requests[1].body["generationConfig"]["responseSchema"],
        json!({"type": "object", "properties": {"city": {"type": "string"}}})
    );
}

#[tokio::test]
async fn a_site_key_is_refused_tools_and_the_upstream_is_never_called() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;

    for (extra, parameter) in [
        (json!({"tools": tools()}), "tools"),
        (json!({"response_format": {"type": "json_object"}}), "response_format"),
    ] {
        let mut body = json!({"messages": [{"role": "user", "content": "Hi"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, error) = json_body(relay.send_chat(body).await).await;
        assert_eq!(status, 400);
        assert_eq!(
            error,
            json!({"error": {"type": "invalid_request_error", "code": "tools_not_allowed",
                "message": format!("`{parameter}` is not available with a site key: function \
                    calling and `response_format` are for server-side callers with a secret key \
                    that has the `tools` scope")}})
        );
    }
    let (status, error) = json_body(relay.send_chat(with_result()).await).await;
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("tools_not_allowed")));
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_key_without_the_tools_scope_is_refused_and_the_upstream_is_never_called() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let secret = key(&relay, &[Scope::Chat]).await;

    let (status, error) = json_body(send(&relay, &secret, &ask(true)).await).await;
    assert_eq!(status, 403);
    assert_eq!(
        error,
        json!({"error": {"type": "permission_error", "code": "insufficient_scope",
            "message": "this API key lacks the `tools` scope, which `tools` needs"}})
    );
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn malformed_tools_are_a_400_naming_the_parameter() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let secret = key(&relay, &[Scope::Chat, Scope::Tools]).await;

    let cases = [
        (
            json!([{"type": "function", "function": {"parameters": {}}}]),
            "invalid_field",
            "invalid `tools[0].function`: missing field `name`",
        ),
        (
            json!([{"type": "function", "function": {"name": "get weather"}}]),
            "invalid_value",
            "`tools[0].function.name` must be 1 to 64 letters, digits, `_` or `-`",
        ),
        (
            json!("get_weather"),
            "invalid_field",
            "invalid `tools`: invalid type: string \"get_weather\", expected a sequence",
        ),
    ];
    for (tools, code, message) in cases {
        let mut body = ask(true);
        body["tools"] = tools;
        let (status, error) = json_body(send(&relay, &secret, &body).await).await;
        assert_eq!(status, 400);
        assert_eq!(
            error,
            json!({"error": {"type": "invalid_request_error", "code": code, "message": message}})
        );
    }
    let mut orphan = with_result();
    orphan["messages"][2]["tool_call_id"] = json!("call_9");
    let (status, error) = json_body(send(&relay, &secret, &orphan).await).await;
    assert_eq!(status, 400);
    assert_eq!(
        error["error"]["message"],
        "`messages[2].tool_call_id` answers no call of an earlier assistant message"
    );
    assert!(mock.requests().is_empty());
}
