// One streamed Responses flow with the official OpenAI npm package against sandcell's /v1
// (started by tests/openai/test_node.py, which gives the address, key and model): the
// SDK's own stream parsing must accept every event, in OpenAI's order, numbered.
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.SANDCELL_OPENAI_URL,
  apiKey: process.env.SANDCELL_OPENAI_KEY,
  maxRetries: 0,
});
const model = process.env.SANDCELL_OPENAI_MODEL;

const container = await client.containers.create({ name: "node" });
const stream = await client.responses.create({
  model,
  input: "Count to three and save it.",
  tools: [{ type: "code_interpreter", container: container.id }],
  include: ["code_interpreter_call.outputs"],
  stream: true,
});
const events = [];
for await (const event of stream) {
  events.push(event);
}
assert.deepEqual(events.map((event) => event.sequence_number), events.map((_, n) => n));
const kinds = events.map((event) => event.type);
assert.equal(kinds[0], "response.created");
assert.equal(kinds.at(-1), "response.completed");
for (const kind of [
  "response.code_interpreter_call.in_progress",
  "response.code_interpreter_call_code.delta",
  "response.code_interpreter_call_code.done",
  "response.code_interpreter_call.interpreting",
  "response.code_interpreter_call.completed",
  "response.output_text.delta",
  "response.output_text.annotation.added",
]) {
  assert.ok(kinds.includes(kind), `no ${kind} event in ${kinds.join(", ")}`);
}
const response = events.at(-1).response;
const call = response.output.find((item) => item.type === "code_interpreter_call");
assert.equal(call.outputs[0].logs, "1\n2\n3\n");
const message = response.output.at(-1);
const [citation] = message.content[0].annotations;
assert.equal(citation.filename, "count.txt");
const content = await client.containers.files.content.retrieve(citation.file_id, {
  container_id: container.id,
});
assert.equal(await content.text(), "1 2 3");
await client.containers.delete(container.id);
console.log(`node: ${events.length} events, the answer: ${message.content[0].text}`);
