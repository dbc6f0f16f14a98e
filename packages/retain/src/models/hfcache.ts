// `retain generate org/name` (and every other command taking a model): a Hugging Face hub id that is not a local path
// resolves offline from the hub cache, where huggingface_hub puts it and where transformers finds it with
// HF_HUB_OFFLINE=1: <cache>/models--org--name/refs/main holds the commit, snapshots/<commit>/ the files. Nothing is
// ever downloaded.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

/** org/name (or a bare name), as the hub spells repository ids; anything else is a path. */
export function isHubId(spec: string): boolean {
  return !isAbsolute(spec) && !spec.startsWith('.') && /^([\w.-]+\/)?[\w.-]+$/.test(spec) && !spec.includes('..');
}

/** The hub cache folder as huggingface_hub chooses it, and which setting chose it (for messages). */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): { dir: string; from: string } {
  if (env.HF_HUB_CACHE) return { dir: env.HF_HUB_CACHE, from: '$HF_HUB_CACHE' };
  if (env.HUGGINGFACE_HUB_CACHE) return { dir: env.HUGGINGFACE_HUB_CACHE, from: '$HUGGINGFACE_HUB_CACHE' };
  if (env.HF_HOME) return { dir: join(env.HF_HOME, 'hub'), from: '$HF_HOME/hub' };
  if (env.XDG_CACHE_HOME) return { dir: join(env.XDG_CACHE_HOME, 'huggingface', 'hub'), from: '$XDG_CACHE_HOME/huggingface/hub' };
  return { dir: join(homedir(), '.cache', 'huggingface', 'hub'), from: 'the default ~/.cache/huggingface/hub' };
}

/**
 * The snapshot folder of `id` at its main revision. The error names each place looked at, the settings that choose
 * the cache, and how to fill it (retain never downloads).
 */
export function resolveHubModel(id: string, env: NodeJS.ProcessEnv = process.env): string {
  const { dir, from } = hubCacheDir(env);
  const repo = join(dir, `models--${id.split('/').join('--')}`);
  const ref = join(repo, 'refs', 'main');
  const commit = existsSync(ref) && statSync(ref).isFile() ? readFileSync(ref, 'utf8').trim() : null;
  const snapshot = commit ? join(repo, 'snapshots', commit) : null;
  if (snapshot && existsSync(snapshot)) return snapshot;
  const looked = [`./${id} (no such local file or folder)`, existsSync(repo) ? `${ref} (${commit ? `names commit ${commit}, but ${snapshot} is missing` : 'missing'})` : `${repo} (missing)`];
  throw new Error(`model not found: '${id}' is neither a local path nor in the Hugging Face cache. Looked at:\n  ${looked.join('\n  ')}\n` +
    `The cache is ${from} (${dir}); $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub choose it, as in transformers. ` +
    `retain never downloads: fetch the model with \`hf download ${id}\` (or huggingface-cli download), or pass a local folder`);
}
