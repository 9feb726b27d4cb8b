// Stream text from the demo model bundled with laminate, then hold a short chat.
//
//   node examples/generate.mjs ["a prompt"]
//
// Environment: MODEL (a model directory; default the bundled demo model), MAX_TOKENS
// (default 48), THREADS (default: the physical cores).
import { demoModelDir, loadModel } from 'laminate';

const prompt = process.argv[2] ?? 'The function';
const maxTokens = Number(process.env.MAX_TOKENS ?? 48);
const threads = process.env.THREADS ? Number(process.env.THREADS) : undefined;

const model = await loadModel(process.env.MODEL || demoModelDir, threads ? { threads } : {});
try {
  console.log(`model: ${model.info.dir} (${model.config.numHiddenLayers} layers, ${model.info.device}${model.info.isa ? `, ${model.info.isa}` : ''})`);

  // 1. Plain text: iterate the generation for chunks as they come, then await it for the result.
  console.log('\n--- generate ---');
  const generation = model.generate(prompt, { maxTokens, temperature: 0.7, topP: 0.95, seed: 1 });
  process.stdout.write(prompt);
  for await (const chunk of generation) process.stdout.write(chunk.text);
  const result = await generation;
  console.log(`\n[generate: ${result.tokens.length} tokens, finish: ${result.finishReason}, ${result.tokensPerSecond.toFixed(0)} tokens/s]`);

  // 2. A chat session: the model's chat template, and a KV cache kept between turns, so the
  //    second turn only computes its new tokens.
  console.log('\n--- chat ---');
  const chat = model.createChat({ system: 'Answer briefly.' });
  try {
    for (const question of ['What is a list?', 'And a tuple?']) {
      process.stdout.write(`> ${question}\n`);
      const turn = chat.send(question, { maxTokens });
      for await (const chunk of turn) process.stdout.write(chunk.text);
      const reply = await turn;
      console.log(`\n[chat: ${reply.tokens.length} tokens, finish: ${reply.finishReason}; the conversation holds ${chat.cachedTokens} tokens in the KV cache]`);
    }
  } finally {
    chat.dispose();
  }
} finally {
  model.dispose();
}
