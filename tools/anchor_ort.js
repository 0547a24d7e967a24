// anchor_ort.js - the ONNX Runtime side of tools/bench_anchors.sh.
//
//   node tools/anchor_ort.js MODEL.onnx SECONDS
//
// One timing round of the image tower exported by tools/anchor_torch.py, on
// npm's onnxruntime-node (CPU execution provider): all graph optimisations,
// 2 intra-op threads, sequential execution.  Images/s at batch 16 and ms at
// batch 1, each the median of calls over SECONDS; peak RSS from
// process.resourceUsage().  One line of key=value for the driver.  The
// package is found through NODE_PATH (the driver installs it under build/).
// Inputs are those of the other engines: pixel i of the batch is
// ((i * 37) mod 101) / 50 - 1.
'use strict';

const ort = require('onnxruntime-node');

function pixels(B) {
  const n = B * 3 * 224 * 224, px = new Float32Array(n);
  for (let i = 0; i < n; i++) px[i] = ((i * 37) % 101) / 50 - 1;
  return new ort.Tensor('float32', px, [B, 3, 224, 224]);
}

function now() { return Number(process.hrtime.bigint()) / 1e9; }

async function medianCall(session, feeds, secs) {
  await session.run(feeds); // warm-up
  const t = [], start = now();
  while (t.length < 3 || now() - start < secs) {
    const t0 = now();
    await session.run(feeds);
    t.push(now() - t0);
  }
  t.sort((a, b) => a - b);
  const h = t.length >> 1;
  return t.length % 2 ? t[h] : 0.5 * (t[h - 1] + t[h]);
}

async function main() {
  const [model, secsArg] = process.argv.slice(2);
  if (!model || !secsArg) {
    console.error('usage: node tools/anchor_ort.js MODEL.onnx SECONDS');
    process.exit(2);
  }
  const secs = Number(secsArg);
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: 2,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const in16 = { pixels: pixels(16) }, in1 = { pixels: pixels(1) };
  const t16 = await medianCall(session, in16, secs);
  const t1 = await medianCall(session, in1, secs);
  const e = (await session.run(in1)).embedding.data;
  const rss = process.resourceUsage().maxRSS / 1024; // kilobytes
  console.log(`ips=${(16 / t16).toFixed(2)} ms=${(1000 * t1).toFixed(2)} rss_mb=${rss.toFixed(0)} ` +
              `isa=mlas-runtime-dispatch threads=2 emb=${e[0].toFixed(5)},${e[1].toFixed(5)},${e[2].toFixed(5)} ` +
              `version=${ort.env.versions.node}`);
}

main().catch((err) => { console.error('anchor_ort.js: ' + err.message); process.exit(1); });
