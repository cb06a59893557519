/**
 * Go-style command-line flags, as the original Go tool (and Consul) take them: single-dash long
 * names (`-sidecar-for web`), also `--name`, `-name=value`, and booleans as `-name` or
 * `-name=false`. Parsing stops at `--` or at the first non-flag argument.
 */
import { HaproxyConnectError } from '../errors.js';

export interface FlagSpec {
  name: string;
  /** `optional-string`: `-name value`, or a bare `-name` (followed by another flag or nothing), which gives ''. */
  kind: 'string' | 'boolean' | 'optional-string';
  usage: string;
  /** Placeholder shown in help, e.g. `<service-id>`. */
  valueName?: string;
  /** Default shown in help (documentation only; defaults are applied by config.ts). */
  defaultText?: string;
}

export interface ParsedFlags {
  values: Map<string, string | boolean>;
  positionals: string[];
}

function invalid(message: string): HaproxyConnectError {
  return new HaproxyConnectError('CONFIG_INVALID', message);
}

function parseBoolean(name: string, raw: string): boolean {
  const value = raw.toLowerCase();
  if (['1', 't', 'true'].includes(value)) return true;
  if (['0', 'f', 'false'].includes(value)) return false;
  throw invalid(`invalid boolean value '${raw}' for flag -${name}: expected true or false`);
}

export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): ParsedFlags {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const values = new Map<string, string | boolean>();
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    const inline = eq === -1 ? undefined : body.slice(eq + 1);
    const spec = byName.get(name);
    if (spec === undefined) throw invalid(`flag provided but not defined: -${name} (see -help)`);
    if (spec.kind === 'boolean') {
      values.set(name, inline === undefined ? true : parseBoolean(name, inline));
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[i + 1];
      if (spec.kind === 'optional-string' && (next === undefined || (next.startsWith('-') && next !== '-'))) {
        values.set(name, '');
        continue;
      }
      if (next === undefined) throw invalid(`flag needs an argument: -${name}`);
      value = next;
      i++;
    }
    values.set(name, value);
  }
  return { values, positionals: argv.slice(i) };
}

export function formatHelp(program: string, specs: readonly FlagSpec[]): string {
  const lines = [`Usage: ${program} -sidecar-for <service-id> [flags]`, '', 'Flags:'];
  for (const spec of specs) {
    const value = spec.kind === 'string' ? ` ${spec.valueName ?? '<value>'}` : spec.kind === 'optional-string' ? ` [${spec.valueName ?? '<value>'}]` : '';
    lines.push(`  -${spec.name}${value}`);
    const def = spec.defaultText === undefined ? '' : ` (default: ${spec.defaultText})`;
    lines.push(`      ${spec.usage}${def}`);
  }
  return lines.join('\n');
}
