// The official `openai` npm package streams partial images from Easel. Run by
// tests/python/test_node_sdk.py with EASEL_BASE and EASEL_KEY set; exits nonzero on failure.
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: `${process.env.EASEL_BASE}/v1`, apiKey: process.env.EASEL_KEY, maxRetries: 0 });

const stream = await client.images.generate({
  model: "gpt-image-1",
  prompt: "a paper boat on a pond",
  stream: true,
  partial_images: 2,
});
const events = [];
for await (const event of stream) events.push(event);
assert.deepEqual(
  events.map((e) => e.type),
  ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"],
);
assert.deepEqual(events.slice(0, 2).map((e) => e.partial_image_index), [0, 1]);
const png = Buffer.from(events[2].b64_json, "base64");
assert.equal(png.subarray(1, 4).toString(), "PNG");
assert.equal(png.readUInt32BE(16), 1024);
assert.equal(events[2].size, "1024x1024");

// A bad key is an error the package raises before any event.
const refused = new OpenAI({ baseURL: `${process.env.EASEL_BASE}/v1`, apiKey: "sk-nope", maxRetries: 0 });
await assert.rejects(
  refused.images.generate({ model: "gpt-image-1", prompt: "x", stream: true }),
  (e) => e instanceof OpenAI.AuthenticationError,
);
console.log(`ok: ${events.length} events`);
