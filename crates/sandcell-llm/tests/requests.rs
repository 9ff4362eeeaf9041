//! Request bodies for one conversation with an image, a tool call and its result.

use sandcell_llm::{
    Conversation, ImageBase64, Message, Protocol, RequestOptions, Sampling, Tool, ToolCall,
};
use serde_json::{json, Value};

const PNG: &str = "iVBORw0KGgo=";

fn conversation() -> Conversation {
    Conversation {
        system: Some("You run Python.".to_owned()),
        messages: vec![
            Message::User {
                text: "Plot this.".to_owned(),
                images: vec![ImageBase64::png(PNG)],
            },
            Message::Assistant {
                text: "Running it.".to_owned(),
                tool_calls: vec![ToolCall {
                    id: "call_1".to_owned(),
                    name: "python".to_owned(),
                    arguments: r#"{"code":"1+1"}"#.to_owned(),
                }],
            },
            Message::ToolResult {
                call_id: "call_1".to_owned(),
                name: "python".to_owned(),
                content: "2".to_owned(),
            },
        ],
    }
}

fn body(protocol: Protocol) -> Value {
    let options = RequestOptions {
        model: "m".to_owned(),
        max_output_tokens: 1024,
        sampling: Sampling::default(),
    };
    protocol
        .request_body(&options, &conversation(), &[Tool::python()])
        .unwrap()
}

fn python_schema() -> Value {
    Tool::python().parameters
}

fn python_description() -> String {
    Tool::python().description
}

#[test]
fn openai_chat() {
    assert_eq!(
        body(Protocol::OpenAiChat),
        json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "You run Python."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Plot this."},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
                ]},
                {"role": "assistant", "content": "Running it.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "python", "arguments": "{\"code\":\"1+1\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "2"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "python", "description": python_description(), "parameters": python_schema(),
            }}],
            "max_completion_tokens": 1024,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[test]
fn openai_chat_tool_only_turn_has_null_content() {
    let conversation = Conversation {
        system: None,
        messages: vec![Message::Assistant {
            text: String::new(),
            tool_calls: vec![],
        }],
    };
    let options = RequestOptions {
        model: "m".to_owned(),
        max_output_tokens: 1,
        sampling: Sampling::default(),
    };
    let body = Protocol::OpenAiChat
        .request_body(&options, &conversation, &[])
        .unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "assistant", "content": null}])
    );
}

#[test]
fn openai_responses() {
    assert_eq!(
        body(Protocol::OpenAiResponses),
        json!({
            "model": "m",
            "instructions": "You run Python.",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "Plot this."},
                    {"type": "input_image", "image_url": format!("data:image/png;base64,{PNG}")},
                ]},
                {"role": "assistant", "content": "Running it."},
                {"type": "function_call", "call_id": "call_1", "name": "python", "arguments": "{\"code\":\"1+1\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "2"},
            ],
            "tools": [{
                "type": "function", "name": "python", "description": python_description(), "parameters": python_schema(),
            }],
            "max_output_tokens": 1024,
            "stream": true,
        })
    );
}

#[test]
fn anthropic() {
    assert_eq!(
        body(Protocol::Anthropic),
        json!({
            "model": "m",
            "max_tokens": 1024,
            "system": "You run Python.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Plot this."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Running it."},
                    {"type": "tool_use", "id": "call_1", "name": "python", "input": {"code": "1+1"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "2"},
                ]},
            ],
            "tools": [{"name": "python", "description": python_description(), "input_schema": python_schema()}],
            "stream": true,
        })
    );
}

#[test]
fn anthropic_merges_consecutive_user_turns() {
    let mut conversation = conversation();
    conversation.messages.push(Message::User {
        text: "Now plot it.".to_owned(),
        images: vec![],
    });
    let options = RequestOptions {
        model: "m".to_owned(),
        max_output_tokens: 1,
        sampling: Sampling::default(),
    };
    let body = Protocol::Anthropic
        .request_body(&options, &conversation, &[])
        .unwrap();
    assert_eq!(
        body["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "2"},
            {"type": "text", "text": "Now plot it."},
        ]})
    );
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
}

#[test]
fn ollama() {
    assert_eq!(
        body(Protocol::Ollama),
        json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "You run Python."},
                {"role": "user", "content": "Plot this.", "images": [PNG]},
                {"role": "assistant", "content": "Running it.", "tool_calls": [
                    {"function": {"name": "python", "arguments": {"code": "1+1"}}},
                ]},
                {"role": "tool", "content": "2", "tool_name": "python"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "python", "description": python_description(), "parameters": python_schema(),
            }}],
            "options": {"num_predict": 1024},
            "stream": true,
        })
    );
}

#[test]
fn arguments_that_are_not_json_cannot_become_an_object() {
    let mut conversation = conversation();
    conversation.messages[1] = Message::Assistant {
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: "call_1".to_owned(),
            name: "python".to_owned(),
            arguments: "{\"code\":".to_owned(),
        }],
    };
    let options = RequestOptions {
        model: "m".to_owned(),
        max_output_tokens: 1,
        sampling: Sampling::default(),
    };
    for protocol in [Protocol::Anthropic, Protocol::Ollama] {
        let error = protocol
            .request_body(&options, &conversation, &[])
            .unwrap_err();
        assert_eq!(error.id, "call_1");
    }
    // The OpenAI protocols carry the text as it was written.
    assert!(Protocol::OpenAiChat
        .request_body(&options, &conversation, &[])
        .is_ok());
}

#[test]
fn sampling_settings_go_where_each_protocol_reads_them_and_only_when_given() {
    let options = RequestOptions {
        model: "m".to_owned(),
        max_output_tokens: 300,
        sampling: Sampling {
            temperature: Some(0.25),
            top_p: Some(0.5),
        },
    };
    let body = |protocol: Protocol| {
        protocol
            .request_body(&options, &conversation(), &[Tool::python()])
            .unwrap()
    };
    let chat = body(Protocol::OpenAiChat);
    assert_eq!(
        (
            &chat["temperature"],
            &chat["top_p"],
            &chat["max_completion_tokens"]
        ),
        (&json!(0.25), &json!(0.5), &json!(300))
    );
    let responses = body(Protocol::OpenAiResponses);
    assert_eq!(
        (
            &responses["temperature"],
            &responses["top_p"],
            &responses["max_output_tokens"]
        ),
        (&json!(0.25), &json!(0.5), &json!(300))
    );
    let anthropic = body(Protocol::Anthropic);
    assert_eq!(
        (
            &anthropic["temperature"],
            &anthropic["top_p"],
            &anthropic["max_tokens"]
        ),
        (&json!(0.25), &json!(0.5), &json!(300))
    );
    let ollama = body(Protocol::Ollama);
    assert_eq!(
        ollama["options"],
        json!({"num_predict": 300, "temperature": 0.25, "top_p": 0.5})
    );
    assert!(ollama.get("temperature").is_none());
    // Left out, they are not sent (the exact bodies above have neither).
    let only_top_p = RequestOptions {
        sampling: Sampling {
            temperature: None,
            top_p: Some(0.9),
        },
        ..options.clone()
    };
    let anthropic = Protocol::Anthropic
        .request_body(&only_top_p, &conversation(), &[])
        .unwrap();
    assert!(anthropic.get("temperature").is_none());
    assert_eq!(anthropic["top_p"], json!(0.9));
}
