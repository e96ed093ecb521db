// The ollama npm package as a Node program uses it, against the npuctl server at process.argv[2] (serving tiny-llama
// and minilm): list, show, ps, version, chat and generate (whole and streamed), embed, embeddings, and a pull, which
// `npuctl serve` refuses (an agent takes it). Prints one JSON line of what it got.
import { Ollama } from "ollama";

const client = new Ollama({ host: process.argv[2] });
const options = { temperature: 0, num_predict: 8 };
const messages = [{ role: "user", content: "Hello" }];
const listed = await client.list();
const shown = await client.show({ model: "tiny-llama" });
const running = await client.ps();
const version = await client.version();
const chat = await client.chat({ model: "tiny-llama", messages, options });
let streamed = "";
let last = null;
for await (const part of await client.chat({ model: "tiny-llama", messages, options, stream: true })) {
  streamed += part.message.content;
  last = part;
}
const generated = await client.generate({ model: "tiny-llama", prompt: "The quick brown", options });
let generatedStream = "";
for await (const part of await client.generate({ model: "tiny-llama", prompt: "The quick brown", options,
  stream: true })) {
  generatedStream += part.response;
}
const embedded = await client.embed({ model: "minilm", input: ["a sentence", "another"] });
const legacy = await client.embeddings({ model: "minilm", prompt: "a sentence" });
let pull = null;
try {
  await client.pull({ model: "hf.co/acme/Tiny-Chat" });
} catch (error) {
  pull = { name: error.name, status: error.status_code, error: error.error };
}
console.log(JSON.stringify({
  models: listed.models.map((m) => m.model).sort(), template: shown.template, capabilities: shown.capabilities,
  running: running.models.map((m) => m.model).sort(), version: version.version,
  chat: chat.message.content, chatDone: chat.done_reason, evalCount: chat.eval_count, streamed,
  streamedDone: last.done, generated: generated.response, generatedStream, context: generated.context.length,
  vectors: embedded.embeddings.length, dimensions: embedded.embeddings[0].length, first: embedded.embeddings[0],
  legacy: legacy.embedding, pull }));
