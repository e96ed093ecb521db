// The openai npm package as a Node program uses it, against the npuctl server at process.argv[2]: chat whole
// and streamed, embeddings, and the Responses API whole and streamed. Prints one JSON line of what it got.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: `${process.argv[2]}/v1`, apiKey: "unused", maxRetries: 0 });
const chat = await client.chat.completions.create({
  model: "tiny-llama", messages: [{ role: "user", content: "Hello" }], max_tokens: 8, temperature: 0 });
let streamed = "";
for await (const chunk of await client.chat.completions.create({
  model: "tiny-llama", messages: [{ role: "user", content: "Hello" }], max_tokens: 8, temperature: 0, stream: true })) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
}
const embedding = await client.embeddings.create({ model: "minilm", input: "a sentence" });
const response = await client.responses.create({ model: "tiny-llama", input: "Hello", max_output_tokens: 8,
  temperature: 0 });
const kinds = [];
let deltas = "";
for await (const event of await client.responses.create({ model: "tiny-llama", input: "Hello",
  max_output_tokens: 8, temperature: 0, stream: true })) {
  kinds.push(event.type);
  if (event.type === "response.output_text.delta") deltas += event.delta;
}
console.log(JSON.stringify({ chat: chat.choices[0].message.content, streamed,
  dimensions: embedding.data[0].embedding.length, response: response.output_text, deltas, kinds }));
