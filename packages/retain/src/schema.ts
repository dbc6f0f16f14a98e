// `retain schema`: the training config's JSON Schema (draft 2020-12), made from the one zod schema so that editors and
// validators see exactly what `retain train` accepts, each method's options included (methods/registry.ts). The
// installed zod (3.25) converts only its v4 schemas (zod/v4's toJSONSchema); config.ts and the methods are written
// against zod 3, so the few kinds they use are converted here. A kind not handled is an error, so a new one cannot
// slip out of the schema unnoticed. Fields only code can pass (functions, tokenizer objects) are left out.
import type { ZodTypeAny } from 'zod';
import { trainConfigSchema } from './config.js';
import { DATA_SPEC_DEF, dataSpecSchema } from './data/spec.js';
import { fieldKind, markedJson, type JsonSchema } from './options.js';

export type { JsonSchema };

interface NumberCheck { kind: string; value?: number; inclusive?: boolean; regex?: RegExp }

function numberSchema(checks: NumberCheck[]): JsonSchema {
  const out: JsonSchema = { type: checks.some((c) => c.kind === 'int') ? 'integer' : 'number' };
  for (const c of checks) {
    if (c.kind === 'min') out[c.inclusive ? 'minimum' : 'exclusiveMinimum'] = c.value;
    if (c.kind === 'max') out[c.inclusive ? 'maximum' : 'exclusiveMaximum'] = c.value;
  }
  return out;
}

function objectSchema(def: { shape: () => Record<string, ZodTypeAny>; unknownKeys: string }): JsonSchema {
  const shape = Object.fromEntries(Object.entries(def.shape()).filter(([, v]) => fieldKind(v) !== 'code'));
  const required = Object.keys(shape).filter((k) => !shape[k].isOptional());
  return {
    type: 'object',
    properties: Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, toJsonSchema(v)])),
    ...(required.length ? { required } : {}),
    // Unknown keys are errors in the config (a typo must not fall back to a default).
    ...(def.unknownKeys === 'strict' ? { additionalProperties: false } : {}),
  };
}

/**
 * One zod 3 schema as JSON Schema; defaults are stated as `default` and describe() texts as `description`;
 * refinements (cross-field rules) are not.
 */
export function toJsonSchema(t: ZodTypeAny): JsonSchema {
  const marked = markedJson(t);
  const out = marked ? marked(toJsonSchema) : convert(t);
  return t.description && out.description === undefined ? { ...out, description: t.description } : out;
}

function convert(t: ZodTypeAny): JsonSchema {
  const def = t._def;
  switch (def.typeName as string) {
    case 'ZodObject': return objectSchema(def);
    case 'ZodString': {
      const re = (def.checks as NumberCheck[]).find((c) => c.kind === 'regex')?.regex;
      return { type: 'string', ...(re ? { pattern: re.source } : {}) };
    }
    case 'ZodNumber': return numberSchema(def.checks);
    case 'ZodBoolean': return { type: 'boolean' };
    case 'ZodUnknown': case 'ZodAny': return {};
    case 'ZodEnum': return { type: 'string', enum: def.values };
    case 'ZodLiteral': return { const: def.value };
    case 'ZodArray': return { type: 'array', items: toJsonSchema(def.type), ...(def.minLength ? { minItems: def.minLength.value } : {}), ...(def.maxLength ? { maxItems: def.maxLength.value } : {}) };
    case 'ZodTuple': return { type: 'array', prefixItems: def.items.map(toJsonSchema), items: false, minItems: def.items.length };
    case 'ZodRecord': return { type: 'object', additionalProperties: toJsonSchema(def.valueType) };
    case 'ZodUnion': return { anyOf: def.options.map(toJsonSchema) };
    case 'ZodDiscriminatedUnion': return { oneOf: (def.options as ZodTypeAny[]).map(toJsonSchema) };
    case 'ZodOptional': return toJsonSchema(def.innerType);
    case 'ZodNullable': return { anyOf: [toJsonSchema(def.innerType), { type: 'null' }] };
    case 'ZodDefault': return { ...toJsonSchema(def.innerType), default: def.defaultValue() };
    case 'ZodEffects': return toJsonSchema(def.schema);
    case 'ZodLazy': return toJsonSchema(def.getter());
    default: throw new Error(`schema.ts: zod type ${def.typeName} has no JSON Schema conversion; add one`);
  }
}

/** The whole `retain train` config. */
export function trainConfigJsonSchema(): JsonSchema {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'retain train config',
    description: 'The YAML file given to `retain train` (keys as in packages/retain/configs/*.yaml).',
    ...toJsonSchema(trainConfigSchema),
    $defs: { [DATA_SPEC_DEF]: toJsonSchema(dataSpecSchema) },
  };
}
