// The ollama npm package's model commands against an npuctl agent at process.argv[3], with its token in
// process.argv[4]: `pull` (whole, then streamed) or `delete` (first without the token), as process.argv[2] says.
// Prints one JSON line of what it got.
import { Ollama } from "ollama";

const [mode, host, token] = process.argv.slice(2);
const client = new Ollama({ host, headers: { Authorization: `Bearer ${token}` } });
const failure = async (call) => {
  try {
    await call();
    return null;
  } catch (error) {
    return { name: error.name, status: error.status_code, error: error.error };
  }
};
if (mode === "pull") {
  const whole = await client.pull({ model: "hf.co/acme/Tiny-Chat" });
  const streamed = [];
  for await (const part of await client.pull({ model: "hf.co/acme/Tiny-Chat", stream: true })) {
    streamed.push(part.status);
  }
  const library = await failure(() => client.pull({ model: "llama3.2" }));
  console.log(JSON.stringify({ status: whole.status, streamed, library }));
} else {
  const anonymous = await failure(() => new Ollama({ host }).delete({ model: "tiny-chat" }));
  const deleted = await client.delete({ model: "hf.co/acme/Tiny-Chat" });
  const unknown = await failure(() => client.delete({ model: "never-pulled" }));
  console.log(JSON.stringify({ anonymous, status: deleted.status, unknown }));
}
