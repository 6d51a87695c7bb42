// Run by tests/test_gateway.c: the official `openai` npm package against a running `specd serve --http`.
// usage: node tests/node/openai_check.mjs BASE_URL MODEL   (exit 0 when every check holds; failures on stderr)
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused-on-loopback", maxRetries: 0 });
const failures = [];
const check = (cond, what) => { if (!cond) { failures.push(what); console.error(`  check failed: ${what}`); } };

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, `models: ${JSON.stringify(models.data)}`);
const one = await client.models.retrieve(model);
check(one.id === model && one.object === "model", `models.retrieve: ${JSON.stringify(one)}`);

const messages = [{ role: "user", content: "Once upon a time" }];
// the neutral values of fields specd does not implement, as agent frameworks send them
const chat = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0,
                                                    presence_penalty: 0, frequency_penalty: 0, logprobs: false });
const text = chat.choices[0].message.content;
check(chat.object === "chat.completion" && text.length > 0, `chat: ${JSON.stringify(chat)}`);
check(chat.usage.completion_tokens === 12 && chat.choices[0].finish_reason === "length", `usage ${JSON.stringify(chat.usage)}`);

let streamed = "", usage = null, finish = null;
const stream = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, stream: true,
                                                      stream_options: { include_usage: true } });
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    streamed += c.delta.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check(streamed === text, `stream "${streamed}" != "${text}"`);
check(usage && usage.completion_tokens === 12 && finish === "length", `stream usage ${JSON.stringify(usage)} ${finish}`);

const cmpl = await client.completions.create({ model, prompt: "The robot", max_tokens: 8, temperature: 0 });
check(cmpl.object === "text_completion" && cmpl.choices[0].text.length > 0, `completion: ${JSON.stringify(cmpl)}`);
let ctext = "";
for await (const chunk of await client.completions.create({ model, prompt: "The robot", max_tokens: 8, temperature: 0, stream: true }))
  ctext += chunk.choices[0]?.text ?? "";
check(ctext === cmpl.choices[0].text, `completion stream "${ctext}" != "${cmpl.choices[0].text}"`);

// errors map to the SDK's classes
try {
  await client.chat.completions.create({ model: "no-such-model", messages });
  check(false, "an unknown model raised nothing");
} catch (e) { check(e instanceof OpenAI.NotFoundError && e.status === 404, `unknown model: ${e}`); }
try {
  await client.chat.completions.create({ model, messages, temperature: "hot" });
  check(false, "a bad temperature raised nothing");
} catch (e) { check(e instanceof OpenAI.BadRequestError && e.param === "temperature", `bad type: ${e}`); }

process.exit(failures.length ? 1 : 0);
